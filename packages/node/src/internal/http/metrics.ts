// The direct client's HTTP metrics. A request must not pay for five metric updates (with
// attributes, each one merges a context and looks its series up: ~3 µs for the lot, several
// percent of a small request), so each origin keeps plain counters that are published to the
// metrics at most every PUBLISH_MS while its requests flow, and at once whenever its last
// request in flight ends: after a batch, the metrics are exact. The duration histogram, without
// attributes, is updated per request.
import type * as Context from "effect/Context"
import * as Metric from "effect/Metric"

/** The metrics, as `NodeHttpClient.metrics` documents them. */
export const metrics = {
  requests: Metric.counter("volley_http_requests_total", {
    description: "Requests that ended, by origin and status_class (1xx-5xx, or error: no response)"
  }),
  duration: Metric.histogram("volley_http_request_duration_ms", {
    description: "Time from sending a request to the end of its response body or its failure, ms",
    boundaries: Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 })
  }),
  inFlight: Metric.gauge("volley_http_in_flight", {
    description: "Requests sent whose response has not ended, by origin"
  }),
  bytesRead: Metric.counter("volley_http_body_bytes_read_total", {
    description: "Response body bytes received off the wire (before decoding), by origin"
  })
}

const PUBLISH_MS = 100
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"] as const

/** One origin's counters since they were last published. */
export class OriginMeter {
  readonly context: Context.Context<never>
  readonly classes: Array<number> = [0, 0, 0, 0, 0, 0]
  readonly requestSeries: ReadonlyArray<Metric.Metric<number, unknown>>
  readonly inFlightSeries: Metric.Metric<number, unknown>
  readonly bytesSeries: Metric.Metric<number, unknown>
  inFlight = 0
  bytes = 0
  publishedAt = 0

  constructor(origin: string, context: Context.Context<never>) {
    this.context = context
    this.requestSeries = CLASSES.map((statusClass) =>
      Metric.withAttributes(metrics.requests, { origin, status_class: statusClass })
    )
    this.inFlightSeries = Metric.withAttributes(metrics.inFlight, { origin })
    this.bytesSeries = Metric.withAttributes(metrics.bytesRead, { origin })
  }

  /** A request was sent; returns its start time. */
  start(): number {
    this.inFlight++
    const now = performance.now()
    if (now - this.publishedAt >= PUBLISH_MS) this.publish(now)
    return now
  }

  /** A request ended with `status` (0: no response), after `bytes` of body. */
  end(started: number, status: number, bytes: number): void {
    const now = performance.now()
    metrics.duration.updateUnsafe(now - started, this.context)
    this.inFlight--
    this.bytes += bytes
    this.classes[status === 0 ? 5 : Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1]!++
    if (this.inFlight === 0 || now - this.publishedAt >= PUBLISH_MS) this.publish(now)
  }

  private publish(now: number): void {
    this.publishedAt = now
    for (let i = 0; i < CLASSES.length; i++) {
      if (this.classes[i] === 0) continue
      this.requestSeries[i]!.updateUnsafe(this.classes[i]!, this.context)
      this.classes[i] = 0
    }
    this.inFlightSeries.updateUnsafe(this.inFlight, this.context)
    if (this.bytes > 0) this.bytesSeries.updateUnsafe(this.bytes, this.context)
    this.bytes = 0
  }
}

/** One meter per origin, for a client's lifetime. */
export class Meters {
  readonly context: Context.Context<never>
  readonly byOrigin = new Map<string, OriginMeter>()
  constructor(context: Context.Context<never>) {
    this.context = context
  }
  of(origin: string): OriginMeter {
    let meter = this.byOrigin.get(origin)
    if (meter === undefined) {
      meter = new OriginMeter(origin, this.context)
      this.byOrigin.set(origin, meter)
    }
    return meter
  }
}
