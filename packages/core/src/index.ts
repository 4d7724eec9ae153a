/**
 * @since 0.1.0
 */

/**
 * Blocking and CPU-heavy work as Effects: tasks with Schema-typed payloads and results, run by
 * a `BlockingExecutor` layer (inline here, worker threads in `@volley/node`).
 *
 * @since 0.1.0
 */
export * as Blocking from "./Blocking.ts"

/**
 * Fan-out: many HTTP requests at once with global and per-host bounds, results in order or as
 * a stream, settle-all or fail-fast, a batch deadline and progress events.
 *
 * @since 0.1.0
 */
export * as Fanout from "./Fanout.ts"

/**
 * Everyday HTTP calls as Effects, on Effect's own `HttpClient`.
 *
 * @since 0.1.0
 */
export * as Http from "./Http.ts"

/**
 * Per-request and per-batch settings for response bodies: decompression and a size limit
 * (`maxBodySize`, counted after decompression), as references over the client's defaults.
 *
 * @since 0.1.0
 */
export * as HttpBody from "./HttpBody.ts"

/**
 * Validation of the options that volley's layers and combinators accept.
 *
 * @since 0.1.0
 */
export * as Options from "./Options.ts"
/**
 * Proxy configuration as data: HTTP, HTTPS and SOCKS5 proxies per scheme, `NO_PROXY` matching
 * as curl does it, routing rules, and reading it all from the environment.
 *
 * @since 0.1.0
 */
export * as Proxy from "./Proxy.ts"
/**
 * Redirects, followed by default for every volley request: at most 10 hops, 303 (and 301/302
 * for POST) as GET, credentials dropped across origins, no https to http, typed errors.
 *
 * @since 0.1.0
 */
export * as Redirects from "./Redirects.ts"
/**
 * Resilience for the environment's `HttpClient` as one layer: the retry policy, plus optional
 * per-origin rate limiting and circuit breaking from Effect's `withRateLimiter`/`withCircuitBreaker`.
 *
 * @since 0.1.0
 */
export * as Resilience from "./Resilience.ts"
/**
 * Retry policy for HTTP requests as a service: idempotent-only retries, full-jitter backoff,
 * `Retry-After` within the deadline, a retry budget and timeouts.
 *
 * @since 0.1.0
 */
export * as Retry from "./Retry.ts"
