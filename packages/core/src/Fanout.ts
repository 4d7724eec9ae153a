/**
 * Fan-out: many HTTP requests at once, bounded, fair across hosts, resilient and cancellable,
 * over whatever `HttpClient` the environment provides.
 *
 * - **Bounds**: at most `concurrency` requests in flight, and at most `perHost` per origin;
 *   requests for a busy origin wait while other origins go on, so one slow host never holds
 *   every slot. `perHost: Fanout.adaptive()` finds each origin's limit as the batch runs.
 * - **Results**: {@link all} / {@link allSettled} give an array in input order;
 *   {@link stream} / {@link streamSettled} emit as requests complete (or in input order with
 *   `ordered: true`) and only start new requests as the consumer takes results, so a slow
 *   consumer throttles fetching instead of buffering bodies.
 * - **Failures**: the `...Settled` forms keep every item's success or typed failure; the others
 *   stop at the first failure and interrupt the requests still in flight. A bug is not an
 *   item's failure: a `read`, progress callback or input iterable that throws ends any form
 *   with that defect (as a throw in a `flatMap`), interrupting what is in flight; an input
 *   item that is not a valid request (a bad URL) is that item's typed failure.
 * - **Resilience**: each request runs under the {@link Retry.RetryPolicy} in the environment
 *   (retries, backoff, `Retry-After`, budget, timeouts), the same rule as `Http.*` (a client
 *   wrapped by `Retry.layerClient` is seen through, never retrying twice); `deadline` bounds
 *   the whole batch. A retry waiting out a `Retry-After` pauses its origin in the batch (no new
 *   request there until then) and lends its slot to other origins' items meanwhile.
 * - **Redirects**: followed for every item as `Redirects` describes (a refused one fails only
 *   that item, with `RedirectError`); each hop is retried on its own.
 * - **Bodies**: every response body is read (by `read`, by default into a `Uint8Array`; a non-2xx
 *   body is read and dropped), so no connection is held by an unread body. `read: json(schema)`
 *   gives typed values, a body that does not decode failing its own item.
 * - **Cost**: at most `concurrency` worker fibers, started as requests start (a huge
 *   `concurrency` costs nothing by itself), no fiber, stream or span per request. On
 *   `NodeHttpClient`, with the default read (or `Http.readBytes`, `Http.readText`) and no
 *   per-request timeouts, a worker sends request after request from one suspension of its fiber
 *   while they succeed; a `read` of your own runs on the worker's fiber, one resume per item.
 * - **Tracing**: a batch is one span, `volley.Fanout` (attributes `volley.fanout.concurrency`,
 *   and `volley.fanout.succeeded` / `volley.fanout.failed` when it ends). With a tracer that
 *   records (OpenTelemetry, say), each item that ends adds an event `volley.fanout.item`
 *   (`volley.fanout.index`, `http.request.method`, `volley.fanout.outcome`, `error.type`,
 *   `http.response.status_code`); Effect's default tracer gets none. Client spans per request
 *   only with `tracing: true`, nested under the batch span; without it, each request sends the
 *   batch span's `traceparent` (on `NodeHttpClient`), so the origins' spans join the trace. With
 *   Effect's default tracer, which records nothing, requests send the `traceparent` of the span
 *   the batch runs in, if any, as `Http.*` do.
 *
 * Interrupting a batch interrupts every request in flight (their sockets are closed).
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Metric from "effect/Metric"
import type * as Result from "effect/Result"
import type * as Schema from "effect/Schema"
import type * as Stream from "effect/Stream"
import * as Forms from "./internal/fanout/forms.ts"
import {
  AdaptiveLimit,
  type AdaptiveOptions,
  type Item,
  type ItemError,
  type Options,
  type PipelineOptions,
  type Settled,
  type StreamOptions
} from "./internal/fanout/model.ts"
import { metrics as originMetrics } from "./internal/fanout/origins.ts"
import { Cancellable, type Input as SchedulerInput } from "./internal/fanout/scheduler.ts"
import { readJson } from "./internal/http/json.ts"
import type * as Validate from "./Options.ts"

export {
  AdaptiveLimit,
  type AdaptiveOptions,
  type AdaptiveReason,
  type Item,
  type ItemError,
  ItemInterrupted,
  type Options,
  type OriginProgress,
  type PipelineOptions,
  type Progress,
  type Settled,
  type StreamOptions
} from "./internal/fanout/model.ts"

/**
 * One request of a batch: a URL (fetched with `GET`), any `HttpClientRequest`, or either made
 * {@link cancellable}. A URL that does not parse, or (from JavaScript) a value that is none of
 * these, fails that item alone with an `InvalidUrlError`: the batch goes on.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HttpClientRequest } from "effect/http"
 * import { Fanout } from "@volley/core"
 *
 * const inputs: Array<Fanout.Input> = [
 *   "http://127.0.0.1:8080/a",
 *   HttpClientRequest.post("http://127.0.0.1:8080/b"),
 *   Fanout.cancellable("http://127.0.0.1:8080/slow", Effect.sleep("2 seconds"))
 * ]
 * const results = Fanout.allSettled(inputs)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Input = SchedulerInput

/**
 * Makes one request of a batch cancellable on its own: when `interruptWhen` completes (or
 * fails), the request is interrupted, its socket closed and its retries ended, or, if it has not
 * started yet, it never starts. In settled forms only that item fails, with `ItemInterrupted`,
 * and the batch goes on; the fail-fast forms fail with it.
 *
 * @example
 * ```ts
 * import { Deferred, Effect, Fiber } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const program = Effect.gen(function* () {
 *   const stopReport = yield* Deferred.make<void>()
 *   const batch = yield* Effect.forkChild(
 *     Fanout.allSettled([
 *       "http://127.0.0.1:8080/a",
 *       Fanout.cancellable("http://127.0.0.1:8080/report", Deferred.await(stopReport))
 *     ])
 *   )
 *   yield* Deferred.succeed(stopReport, undefined) // the report only: item 1 fails with ItemInterrupted
 *   return yield* Fiber.join(batch)
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const cancellable = (
  request: string | URL | HttpClientRequest.HttpClientRequest,
  interruptWhen: Effect.Effect<unknown, unknown>
): Input => new Cancellable(request, interruptWhen)

/**
 * An adaptive per-origin limit, for `perHost`: instead of guessing how many requests an origin
 * takes at once, each origin's limit starts at `initial` and follows its capacity while the
 * batch runs, from its own latency and answers, never from another origin's.
 *
 * How: the limit grows quickly at first (x1.5 a round: the answers to as many requests as
 * the limit, sent since it last changed, about two round trips), then once a round compares
 * the origin's latency (to the response head: the mean of a round, each answer
 * counted at most twice the uncongested latency, smoothed over rounds, less the client's own
 * stalls, which a 5 ms timer measures) to its uncongested
 * latency (the lowest over the last 10-20 s, re-measured by a round at 3/4 of the limit every
 * 10 s) and moves to `limit × baseline / latency` plus a small headroom: when the origin
 * queues, latency grows in proportion to the queue and that step lands on its capacity (a
 * little above it: a request or few queue there, so no slot of the origin idles). A 429 or
 * 503, a refused or reset connection, or a timeout halves the limit (at most once per round
 * trip); a `Retry-After` also pauses the origin until then (capped by the retry policy's
 * `maxRetryAfter` and the batch `deadline`). Latency is measured to the response head, so body
 * sizes do not count. Use it when the origins' capacity is unknown or changes; a known, fixed
 * quota is better served by a number.
 *
 * Visible as it runs: `Progress.origins` in `onProgress`, and {@link adaptiveMetrics}.
 *
 * A batch keeps the limits of the last 1,024 origins to go idle (no request in flight or
 * queued; a paused one until its pause ends): an origin forgotten before it is met again
 * starts again from `initial`, so that a stream over an endless input of origins keeps a
 * bounded state.
 *
 * Options are checked when a batch starts: `min`, `max` and `initial` must be integers >= 1
 * with `min <= initial <= max`, or the batch fails with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Fanout } from "@volley/core"
 *
 * const urls = Array.from({ length: 1000 }, (_, i) => `http://127.0.0.1:8080/items/${i}`)
 * const batch = Fanout.allSettled(urls, {
 *   concurrency: 128,
 *   perHost: Fanout.adaptive({ initial: 4, min: 1, max: 64 }),
 *   onProgress: (p) => {
 *     for (const o of p.origins ?? []) console.log(o.origin, o.limit, o.reason)
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const adaptive = (options: AdaptiveOptions = {}): AdaptiveLimit => new AdaptiveLimit(options)

/**
 * The metrics of adaptive limits (see {@link adaptive}): gauges `volley_fanout_origin_limit`,
 * `volley_fanout_origin_in_flight`, `volley_fanout_origin_latency_baseline_ms`,
 * `volley_fanout_origin_latency_ms` and the counter `volley_fanout_origin_limit_changes_total`,
 * each with an `origin` attribute (and `reason` on the counter), updated when a limit moves.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const limits = Effect.map(Metric.snapshot, (all) =>
 *   all.filter((m) => m.id === "volley_fanout_origin_limit")
 * )
 * ```
 *
 * @since 0.1.0
 * @category metrics
 */
export const adaptiveMetrics: {
  readonly limit: Metric.Gauge<number>
  readonly inFlight: Metric.Gauge<number>
  readonly baseline: Metric.Gauge<number>
  readonly latency: Metric.Gauge<number>
  readonly changes: Metric.Counter<number>
} = originMetrics

/**
 * A `read` that decodes each 2xx body as JSON with `schema`, for any batch form: results are the
 * schema's typed values, and an item whose body is not JSON or does not match fails on its own
 * (settled forms keep going) with an `HttpClientError` whose reason is a `DecodeError`: its
 * message names the request (`GET <url>`) and the schema's issue, its `cause` is the
 * `SchemaError`. Such a failure is not retried (the same body would fail the same way). An empty
 * body (a 204) decodes as `null`: `Schema.NullOr(...)` where an origin may send none. The
 * schema's decoding services, if any, become the batch's requirements. Build it once and reuse
 * it: the decoder is made when `json` is called, not per response. The request's headers are
 * the batch's (add `accept: application/json` to an `HttpClientRequest` if the origin needs it).
 *
 * @example
 * ```ts
 * import { Effect, Result, Schema } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const User = Schema.Struct({ id: Schema.Number, name: Schema.String })
 * const urls = [1, 2, 3].map((id) => `http://127.0.0.1:8080/users/${id}`)
 *
 * // Array<Result<{ id: number; name: string }, Fanout.ItemError<never>>>
 * const users = Fanout.allSettled(urls, { read: Fanout.json(User) })
 * const names = Fanout.all(urls, { read: Fanout.json(User) }).pipe(
 *   Effect.map((all) => all.map((user) => user.name))
 * )
 * const badBodies = Effect.map(users, (results) =>
 *   results.filter((r) => Result.isFailure(r) && r.failure._tag === "HttpClientError" && r.failure.reason._tag === "DecodeError")
 * )
 * ```
 *
 * @since 0.1.0
 * @category readers
 */
export const json = <S extends Schema.Constraint>(
  schema: S
): ((
  response: HttpClientResponse.HttpClientResponse
) => Effect.Effect<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]>) => readJson(schema)

/**
 * Runs every request and returns the values in input order; the first failure interrupts the
 * requests in flight and fails the batch with that item's error.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout } from "@volley/core"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const urls = Array.from({ length: 100 }, (_, i) => `http://127.0.0.1:8080/items/${i}`)
 * const bodies = Fanout.all(urls, { concurrency: 16, read: (res) => res.text }).pipe(
 *   Effect.provide(NodeHttpClient.layer())
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const all = <A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  options?: Options<A, E, R>
): Effect.Effect<Array<A>, ItemError<E> | Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Forms.all(requests, options)

/**
 * Runs every request and returns each one's `Result` in input order. Never fails for an item:
 * a failed request, an interrupted one, one past the deadline, each is a `Result.fail` with
 * a typed error, and the others go on.
 *
 * @example
 * ```ts
 * import { Effect, Result } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const program = Fanout.allSettled(["http://127.0.0.1:8080/a", "http://exa mple/"], { perHost: 4 }).pipe(
 *   Effect.map((results) => results.filter(Result.isFailure).length)
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const allSettled = <A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  options?: Options<A, E, R>
): Effect.Effect<Array<Result.Result<A, ItemError<E>>>, Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Forms.allSettled(requests, options)

/**
 * Streams the successful items as they complete (or in input order with `ordered: true`); the
 * first failure fails the stream and interrupts the requests in flight. Requests start only as
 * the consumer takes results (see `buffer`).
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const sizes = Fanout.stream(["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"]).pipe(
 *   Stream.map((item) => item.value.byteLength),
 *   Stream.runCollect
 * )
 * ```
 *
 * @since 0.1.0
 * @category streams
 */
export const stream = <A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  options?: StreamOptions<A, E, R>
): Stream.Stream<Item<A>, ItemError<E> | Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Forms.stream(requests, options)

/**
 * Streams every item's `Settled` outcome as it completes (or in input order with
 * `ordered: true`). Never fails for an item. Requests start only as the consumer takes results,
 * so piping it into a slow stage bounds the bodies held at once to `concurrency + buffer`.
 *
 * @example
 * ```ts
 * import { Effect, Result, Stream } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const failures = Fanout.streamSettled(["http://127.0.0.1:8080/a"], { concurrency: 8 }).pipe(
 *   Stream.filter((item) => Result.isFailure(item.result)),
 *   Stream.runCount
 * )
 * ```
 *
 * @since 0.1.0
 * @category streams
 */
export const streamSettled = <A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  options?: StreamOptions<A, E, R>
): Stream.Stream<Settled<A, E>, Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Forms.streamSettled(requests, options)

/**
 * Fetches the requests and runs `stage` on each successful body, for example a CPU-heavy
 * `Blocking.run` on worker threads, with bounded work end to end: a body counts against the
 * window from when its request starts until `stage` is done with it, so at most
 * `concurrency + buffer` bodies are held at once and a slow stage throttles the fetching
 * instead of letting bodies pile up. Emits the stage's results as they complete (input order
 * with `ordered: true`); the first failure, of a request or of the stage, fails the stream
 * ({@link pipelineSettled} keeps going instead).
 *
 * @example
 * ```ts
 * import { Effect, Schema, Stream } from "effect"
 * import { Blocking, Fanout } from "@volley/core"
 *
 * const size = Blocking.task({
 *   name: "size",
 *   payload: Schema.Uint8Array,
 *   success: Schema.Number,
 *   handler: (bytes) => bytes.byteLength
 * })
 * const sizes = Fanout.pipeline(["http://127.0.0.1:8080/a"], (item) => Blocking.run(size, item.value), {
 *   concurrency: 8,
 *   stageConcurrency: 4
 * }).pipe(Stream.runCollect, Effect.provide(Blocking.layerInline))
 * ```
 *
 * @since 0.1.0
 * @category streams
 */
export const pipeline = <B, E2, R2, A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  stage: (item: Item<A>) => Effect.Effect<B, E2, R2>,
  options?: PipelineOptions<A, E, R>
): Stream.Stream<Item<B>, ItemError<E> | E2 | Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  Forms.pipeline(requests, stage, options)

/**
 * {@link pipeline} that keeps going: emits every item's `Settled` outcome, whether its request
 * failed (the stage never sees it), its stage failed, or both succeeded, with the same bound on
 * bodies held at once. A stage interrupted from inside fails only its item (`ItemInterrupted`).
 *
 * @example
 * ```ts
 * import { Effect, Result, Schema, Stream } from "effect"
 * import { Blocking, Fanout } from "@volley/core"
 *
 * const size = Blocking.task({
 *   name: "size",
 *   payload: Schema.Uint8Array,
 *   success: Schema.Number,
 *   handler: (bytes) => bytes.byteLength
 * })
 * const failures = Fanout.pipelineSettled(["http://127.0.0.1:8080/a"], (item) => Blocking.run(size, item.value)).pipe(
 *   Stream.filter((item) => Result.isFailure(item.result)),
 *   Stream.runCount,
 *   Effect.provide(Blocking.layerInline)
 * )
 * ```
 *
 * @since 0.1.0
 * @category streams
 */
export const pipelineSettled = <B, E2, R2, A = Uint8Array, E = never, R = never>(
  requests: Iterable<Input>,
  stage: (item: Item<A>) => Effect.Effect<B, E2, R2>,
  options?: PipelineOptions<A, E, R>
): Stream.Stream<Settled<B, E | E2>, Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  Forms.pipelineSettled(requests, stage, options)
