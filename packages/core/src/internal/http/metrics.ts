// Counters of what the core does to HTTP requests above the client, for the code that retries
// (internal/retry) and follows redirects to update, with an `origin` attribute (the origin of
// the request sent again / of the redirect's target). The client's own metrics (requests,
// duration, in flight, bytes) are the platform client's (NodeHttpClient.metrics).
import * as Metric from "effect/Metric"

export const retries = Metric.counter("volley_http_retries_total", {
  description: "Requests sent again by the retry policy, by origin"
})

export const redirects = Metric.counter("volley_http_redirects_total", {
  description: "Redirects followed, by origin of the target"
})
