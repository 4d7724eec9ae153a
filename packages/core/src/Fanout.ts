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
 *   stop at the first failure and interrupt the requests still in flight.
 * - **Resilience**: each request runs under the {@link Retry.RetryPolicy} in the environment
 *   (retries, backoff, `Retry-After`, budget, timeouts), the same rule as `Http.*` (a client
 *   wrapped by `Retry.layerClient` is seen through, never retrying twice); `deadline` bounds
 *   the whole batch.
 * - **Bodies**: every response body is read (by `read`, by default into a `Uint8Array`; a non-2xx
 *   body is read and dropped), so no connection is held by an unread body.
 * - **Cost**: at most `concurrency` worker fibers, started as requests start (a huge
 *   `concurrency` costs nothing by itself), no fiber, stream or span per request.
 * - **Tracing**: a batch is one span, `volley.Fanout` (attributes `volley.fanout.concurrency`,
 *   and `volley.fanout.succeeded` / `volley.fanout.failed` when it ends). With a tracer that
 *   records (OpenTelemetry, say), each item that ends adds an event `volley.fanout.item`
 *   (`volley.fanout.index`, `http.request.method`, `volley.fanout.outcome`, `error.type`,
 *   `http.response.status_code`); Effect's default tracer gets none. Client spans per request
 *   (and their `traceparent`) only with `tracing: true`, nested under the batch span.
 *
 * Interrupting a batch interrupts every request in flight (their sockets are closed).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import type * as Adaptive from "./internal/fanout/adaptive.ts"
import * as Engine from "./internal/fanout/engine.ts"
import { metrics as originMetrics } from "./internal/fanout/origins.ts"
import { Cancellable, type Job, Scheduler, type Input as SchedulerInput } from "./internal/fanout/scheduler.ts"
import * as Exchange from "./internal/http/exchange.ts"
import * as Validate from "./Options.ts"
import type * as Retry from "./Retry.ts"

/**
 * One request of a batch: a URL (fetched with `GET`), any `HttpClientRequest`, or either made
 * {@link cancellable}.
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
 * Options of every batch.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<A, E, R> {
  /**
   * Maximum requests in flight. Worker fibers start as requests do, so a large value costs
   * only the requests actually in flight (`1e9` over three URLs runs three).
   * @default 16
   */
  readonly concurrency?: number | undefined
  /**
   * Maximum requests in flight per origin (`scheme://host:port`). Requests for a busy origin
   * wait in its queue (up to `max(1024, 16 × concurrency)` read ahead of the workers, 65,536 at
   * most) while other origins' requests go first. {@link adaptive} instead finds each origin's
   * limit from its latency and its 429/503 answers.
   * @default no limit beyond `concurrency`
   */
  readonly perHost?: number | AdaptiveLimit | undefined
  /**
   * Time allowed for the whole batch. Requests still running then are interrupted; in settled
   * forms they and the ones never started get `DeadlineExceeded`, other forms fail with it.
   * Streams hand those out as the consumer takes them, so the rest of a long or endless input is
   * read only as far as the consumer goes. Retries never wait past it. More than 0 when set.
   * @default none
   */
  readonly deadline?: Duration.Input | undefined
  /**
   * Reads a 2xx response. It must consume the body (or fail). Non-2xx responses fail with a
   * `StatusCodeError` after their body is drained.
   * @default the body as a `Uint8Array`
   */
  readonly read?: ((response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>) | undefined
  /**
   * Called with fresh counters whenever a request starts, finishes or is retried.
   * @default none
   */
  readonly onProgress?: ((progress: Progress) => void) | undefined
  /**
   * Let the client trace each request: a client span per request under the batch span, and its
   * `traceparent` sent (with a recording tracer, a span per request costs more than the request).
   * @default false
   */
  readonly tracing?: boolean | undefined
}

/**
 * Options of the stream forms.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamOptions<A, E, R> extends Options<A, E, R> {
  /**
   * Emit in input order instead of completion order.
   * @default false
   */
  readonly ordered?: boolean | undefined
  /**
   * Results that may wait for, or be held by, the consumer beyond those in flight (and the most
   * handed over in one chunk). A request starts only while fewer than `concurrency + buffer`
   * results exist that the consumer has not finished with (it has finished with a chunk when
   * it pulls the next), so that sum bounds the bodies held at once.
   * @default concurrency
   */
  readonly buffer?: number | undefined
}

/**
 * Counters of a batch, as passed to `onProgress`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  /** Number of requests, when the input is an array. */
  readonly total: number | undefined
  /** Finished requests, successful or not. */
  readonly done: number
  readonly succeeded: number
  readonly failed: number
  readonly inFlight: number
  /** Retries so far (a request retried twice counts twice). */
  readonly retried: number
  /**
   * With `perHost: Fanout.adaptive()`: each origin's limit now and why (computed when read,
   * so read it in the callback).
   */
  readonly origins?: ReadonlyArray<OriginProgress> | undefined
}

/**
 * One origin's adaptive limit, as in {@link Progress}.
 *
 * @since 0.1.0
 * @category models
 */
export interface OriginProgress {
  /** `scheme://host:port` (without a default port). */
  readonly origin: string
  /** Requests of this origin allowed in flight now. */
  readonly limit: number
  /** Requests of this origin in flight now (retries waiting included). */
  readonly inFlight: number
  /** The origin's uncongested latency (ms) to the response head, once measured. */
  readonly baselineMillis: number | undefined
  /** Mean latency (ms) to the response head of the last round of responses. */
  readonly latencyMillis: number | undefined
  /** Why the limit last changed. */
  readonly reason: AdaptiveReason
  /** While a `Retry-After` pauses the origin: until when (the `Clock`'s monotonic ms). */
  readonly pausedUntil: number | undefined
}

/**
 * Why an adaptive limit last changed: still `"initial"`; `"slow-start"` (x1.5 per round trip
 * until the first sign of congestion); `"headroom"` (latency at the baseline, probing
 * upwards); `"queueing"` (latency above the baseline, lowered by the ratio); `"probe"` (one
 * round at 3/4 of the limit, every 10 s, to re-measure the baseline); `"overload"` (a
 * 429, 503, refused or reset connection: halved); `"timeout"` (halved); `"retry-after"`
 * (halved, and the origin paused).
 *
 * @since 0.1.0
 * @category models
 */
export type AdaptiveReason = Adaptive.Reason

/**
 * Options of {@link adaptive}.
 *
 * @since 0.1.0
 * @category models
 */
export interface AdaptiveOptions {
  /**
   * Limit of each origin before anything is known about it.
   * @default 4
   */
  readonly initial?: number | undefined
  /**
   * Lowest limit, whatever the origin answers.
   * @default 1
   */
  readonly min?: number | undefined
  /**
   * Highest limit (never more than the batch's `concurrency` anyway).
   * @default 256
   */
  readonly max?: number | undefined
}

/**
 * A `perHost` that adapts to each origin, made by {@link adaptive}.
 *
 * @since 0.1.0
 * @category models
 */
export class AdaptiveLimit {
  readonly _tag = "AdaptiveLimit"
  readonly options: AdaptiveOptions
  constructor(options: AdaptiveOptions) {
    this.options = options
  }
}

/**
 * An adaptive per-origin limit, for `perHost`: instead of guessing how many requests an origin
 * takes at once, each origin's limit starts at `initial` and follows its capacity while the
 * batch runs, from its own latency and answers, never from another origin's.
 *
 * How: the limit grows quickly at first (x1.5 per round trip), then once per round trip
 * compares the origin's latency (the median to the response head, smoothed) to its uncongested
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
 * One item's request was interrupted from inside (its own read, an interrupted client call) or
 * cancelled from outside ({@link cancellable}) while the batch went on; in settled forms only
 * that item fails.
 *
 * @example
 * ```ts
 * import { Fanout } from "@volley/core"
 *
 * new Fanout.ItemInterrupted({ index: 3, method: "GET", url: "http://127.0.0.1:8080/x" }).message
 * // "GET http://127.0.0.1:8080/x (item 3) was interrupted"
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ItemInterrupted extends Data.TaggedError("ItemInterrupted")<{
  readonly index: number
  readonly method: string
  readonly url: string
}> {
  override get message(): string {
    return `${this.method} ${this.url} (item ${this.index}) was interrupted`
  }
}

/**
 * Why one item failed: the client's `HttpClientError` (transport, invalid URL, non-2xx status,
 * decode), the retry policy's errors, an interruption of that item, or `read`'s own error.
 *
 * @since 0.1.0
 * @category errors
 */
export type ItemError<E> = HttpClientError.HttpClientError | Retry.RetryError | ItemInterrupted | E

/**
 * A finished item of a settled stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settled<A, E> {
  /** Position in the input. */
  readonly index: number
  readonly request: HttpClientRequest.HttpClientRequest
  readonly result: Result.Result<A, ItemError<E>>
}

/**
 * A successful item of a fail-fast stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface Item<A> {
  readonly index: number
  readonly request: HttpClientRequest.HttpClientRequest
  readonly value: A
}

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
  Effect.flatMap(resolve(requests, options, undefined), ({ plan, scheduler, total }) => {
    const values: Array<A> = total === undefined ? [] : new Array(total).fill(undefined)
    return Effect.as(
      Engine.run<A, E, R, ItemError<E>>(plan, scheduler, {
        success: (job, value) => {
          values[job.index] = value
        },
        failure: (_, error) => Cause.fail(error),
        interrupted: (job) => Cause.fail(interrupted(job))
      }),
      values
    )
  })

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
  Effect.flatMap(resolve(requests, options, undefined), ({ plan, scheduler, total }) => {
    // Filled, so V8 keeps a packed array rather than a dictionary for large batches.
    const results: Array<Result.Result<A, ItemError<E>>> = total === undefined ? [] : new Array(total).fill(undefined)
    return Effect.as(
      Engine.run(plan, scheduler, {
        success: (job, value) => {
          results[job.index] = Result.succeed(value)
        },
        failure: (job, error) => {
          results[job.index] = Result.fail(error)
          return undefined
        },
        interrupted: (job) => {
          results[job.index] = Result.fail(interrupted(job))
          return undefined
        }
      }) as Effect.Effect<void, never, R | HttpClient.HttpClient>,
      results
    )
  })

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
  makeStream<A, E, R, Item<A>>(requests, options, (push) => ({
    success: (job, value) => push(job.index, { index: job.index, request: job.request, value }),
    failure: (_, error) => Cause.fail(error),
    interrupted: (job) => Cause.fail(interrupted(job))
  }))

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
  makeStream<A, E, R, Settled<A, E>>(requests, options, (push) => ({
    success: (job, value) => push(job.index, { index: job.index, request: job.request, result: Result.succeed(value) }),
    failure: (job, error) => {
      push(job.index, { index: job.index, request: job.request, result: Result.fail(error) })
      return undefined
    },
    interrupted: (job) => {
      push(job.index, { index: job.index, request: job.request, result: Result.fail(interrupted(job)) })
      return undefined
    }
  })) as Stream.Stream<Settled<A, E>, Validate.InvalidOptionsError, R | HttpClient.HttpClient>

/**
 * Options of {@link pipeline} and {@link pipelineSettled}.
 *
 * @since 0.1.0
 * @category models
 */
export interface PipelineOptions<A, E, R> extends StreamOptions<A, E, R> {
  /**
   * Items in the processing stage at once.
   * @default concurrency
   */
  readonly stageConcurrency?: number | undefined
}

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
  staged<A, E, R, Leased<Item<A>>, Item<B>, E2, R2>(
    requests,
    options,
    (push, release) => ({
      success: (job, value) => push(job.index, { index: job.index, request: job.request, value, release }),
      failure: (_, error) => Cause.fail(error),
      interrupted: (job) => Cause.fail(interrupted(job))
    }),
    (item) => Effect.map(stage(item), (value) => ({ index: item.index, request: item.request, value }))
  )

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
  staged<A, E, R, Leased<Settled<A, E>>, Settled<B, E | E2>, never, R2>(
    requests,
    options,
    (push, release) => {
      const settle = (job: Job, result: Result.Result<A, ItemError<E>>) => {
        push(job.index, { index: job.index, request: job.request, result, release })
        return undefined
      }
      return {
        success: (job, value) => settle(job, Result.succeed(value)),
        failure: (job, error) => settle(job, Result.fail(error)),
        interrupted: (job) => settle(job, Result.fail(interrupted(job)))
      }
    },
    (item): Effect.Effect<Settled<B, E | E2>, never, R2> => {
      const { index, request, result } = item
      if (Result.isFailure(result)) return Effect.succeed({ index, request, result: Result.fail(result.failure) })
      return Effect.flatMap(
        Effect.exit(stage({ index, request, value: result.success })),
        (exit): Effect.Effect<Settled<B, E | E2>> => {
          if (Exit.isSuccess(exit)) return Effect.succeed({ index, request, result: Result.succeed(exit.value) })
          const error = Cause.findErrorOption(exit.cause)
          if (Option.isSome(error)) return Effect.succeed({ index, request, result: Result.fail(error.value) })
          // Interrupted from inside: only this item fails. A defect is a bug and ends the stream.
          if (!Cause.hasInterruptsOnly(exit.cause)) return Effect.failCause(exit.cause as Cause.Cause<never>)
          const failure = new ItemInterrupted({ index, method: request.method, url: request.url })
          return Effect.succeed({ index, request, result: Result.fail(failure) })
        }
      )
    }
  ) as Stream.Stream<Settled<B, E | E2>, Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient>

type Leased<T> = T & { readonly release: () => void }

// Fetches into `sink` (with items leaving the window only when `release`d) and runs `run` on
// each item, `stageConcurrency` at a time, releasing the item when `run` is done with it.
const staged = <A, E, R, In extends { readonly release: () => void }, Out, E2, R2>(
  requests: Iterable<Input>,
  options: PipelineOptions<A, E, R> | undefined,
  sink: (push: Push<In>, release: () => void) => Engine.Sink<A, Engine.Failure<E>, ItemError<E>>,
  run: (item: In) => Effect.Effect<Out, E2, R2>
): Stream.Stream<Out, ItemError<E> | E2 | Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  Stream.unwrap(
    Effect.map(
      // `concurrency` first, so a bad one is reported under its own name, not as the default's.
      Effect.flatMap(Validate.positiveInt("concurrency", options?.concurrency ?? 16), (concurrency) =>
        Validate.positiveInt("stageConcurrency", options?.stageConcurrency ?? concurrency)
      ),
      (stageConcurrency) =>
        makeStream<A, E, R, In>(requests, options, sink, true).pipe(
          Stream.mapEffect((item) => Effect.ensuring(run(item), Effect.sync(item.release)), {
            concurrency: stageConcurrency,
            unordered: !(options?.ordered ?? false)
          })
        )
    )
  )

// ---------------------------------------------------------------------------------------------

const interrupted = (job: Job) =>
  new ItemInterrupted({ index: job.index, method: job.request.method, url: job.request.url })

const resolve = <A, E, R>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined,
  stream: { readonly ordered: boolean } | undefined
) =>
  Effect.gen(function* () {
    const concurrency = yield* Validate.positiveInt("concurrency", options?.concurrency ?? 16)
    const perHostOption = options?.perHost
    const adaptive =
      perHostOption instanceof AdaptiveLimit ? yield* adaptiveConfig(perHostOption, concurrency) : undefined
    const perHost =
      perHostOption instanceof AdaptiveLimit
        ? undefined
        : yield* Validate.optional(perHostOption, (n) => Validate.positiveInt("perHost", n))
    const deadline = yield* Validate.optional(options?.deadline, (d) =>
      Validate.duration("deadline", d, { positive: true })
    )
    const buffer = yield* Validate.positiveInt("buffer", options?.buffer ?? concurrency, 0)
    const total = Array.isArray(requests) ? requests.length : undefined
    const plan: Engine.Plan<A, E, R> = {
      concurrency: total === undefined ? concurrency : Math.min(concurrency, total),
      deadlineMillis: deadline === undefined ? undefined : Duration.toMillis(deadline),
      read: options?.read ?? (Exchange.readBytes as unknown as Engine.Plan<A, E, R>["read"]),
      customRead: options?.read !== undefined,
      tracing: options?.tracing ?? false,
      progress: options?.onProgress === undefined ? undefined : new Engine.Progress(total, options.onProgress)
    }
    const scheduler = new Scheduler(requests[Symbol.iterator](), {
      perHost: perHost === undefined || perHost >= concurrency ? undefined : perHost,
      adaptive,
      window: stream === undefined ? Number.POSITIVE_INFINITY : concurrency + buffer,
      ordered: stream?.ordered ?? false,
      // Requests read ahead into per-origin queues while their origin is busy: enough for
      // fairness across many origins, bounded so a huge input is not turned into requests at
      // once, and so is the bound itself: `concurrency: 1e9` must not read an endless input.
      lookahead: Math.min(Math.max(1024, concurrency * 16), MAX_LOOKAHEAD)
    })
    return { plan, scheduler, buffer, total }
  })

/** Most requests read ahead of the workers, whatever `concurrency` is (see `perHost`). */
const MAX_LOOKAHEAD = 65_536

// Checked when a batch starts; `max` (then `min` and `initial`) clamped to `concurrency`,
// which caps every origin anyway.
const adaptiveConfig = (limit: AdaptiveLimit, concurrency: number) =>
  Effect.gen(function* () {
    const min = yield* Validate.positiveInt("perHost.min", limit.options.min ?? 1)
    const max = yield* Validate.positiveInt("perHost.max", limit.options.max ?? Math.max(256, min))
    const initial = yield* Validate.positiveInt(
      "perHost.initial",
      limit.options.initial ?? Math.min(max, Math.max(4, min))
    )
    if (min > max) {
      return yield* new Validate.InvalidOptionsError({
        option: "perHost.min",
        reason: `must be <= max (${max}), got ${min}`
      })
    }
    if (initial < min || initial > max) {
      return yield* new Validate.InvalidOptionsError({
        option: "perHost.initial",
        reason: `must be between min (${min}) and max (${max}), got ${initial}`
      })
    }
    const cap = Math.min(max, concurrency)
    return { min: Math.min(min, cap), max: cap, initial: Math.min(initial, cap) } satisfies Adaptive.Config
  })

type Push<Out> = (index: number, out: Out) => void

const makeStream = <A, E, R, Out>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined,
  sink: (push: Push<Out>, release: () => void) => Engine.Sink<A, Engine.Failure<E>, ItemError<E>>,
  // Items leave the window when the consumer calls `release`, not when it pulls again.
  manual = false
): Stream.Stream<Out, ItemError<E> | Validate.InvalidOptionsError, R | HttpClient.HttpClient> => {
  const ordered = options?.ordered ?? false
  return Stream.fromChannel(
    Channel.fromTransform((_, scope) =>
      Effect.gen(function* () {
        const { plan, scheduler, buffer } = yield* resolve(requests, options, { ordered })
        let ready: Array<Out> = []
        let finished: Exit.Exit<void, ItemError<E>> | undefined
        let puller: (() => void) | undefined
        const wake = () => puller?.()
        // Completion order, or a reorder buffer releasing the next index due.
        const pending = new Map<number, Out>()
        let due = 0
        const push: Push<Out> = ordered
          ? (index, out) => {
              if (index !== due) {
                pending.set(index, out)
                return
              }
              ready.push(out)
              due++
              for (let next = pending.get(due); next !== undefined; next = pending.get(due)) {
                pending.delete(due++)
                ready.push(next)
              }
              wake()
            }
          : (_, out) => {
              ready.push(out)
              wake()
            }
        const release = () => scheduler.consume(1)
        yield* Engine.run(plan, scheduler, sink(push, release)).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              finished = exit
              wake()
            })
          ),
          Effect.forkIn(scope)
        )
        // A pull means the consumer is done with the previous chunk: only then do its items
        // leave the window. Chunks are capped at `buffer` so the fetching can go on meanwhile.
        const chunk = Math.max(1, buffer)
        let lent = 0
        const pull: Effect.Effect<readonly [Out, ...Array<Out>], ItemError<E> | Cause.Done> = Effect.suspend(() => {
          if (lent > 0 && !manual) {
            scheduler.consume(lent)
            lent = 0
          }
          if (ready.length > 0) {
            let out = ready
            if (ready.length <= chunk) ready = []
            else {
              out = ready.slice(0, chunk)
              ready = ready.slice(chunk)
            }
            lent = out.length
            return Effect.succeed(out as unknown as readonly [Out, ...Array<Out>])
          }
          if (finished !== undefined) return Exit.isSuccess(finished) ? Cause.done() : Effect.failCause(finished.cause)
          return Effect.callback<readonly [Out, ...Array<Out>], ItemError<E> | Cause.Done>((resume) => {
            if (ready.length > 0 || finished !== undefined) return resume(pull)
            puller = () => {
              puller = undefined
              resume(pull)
            }
            return Effect.sync(() => {
              puller = undefined
            })
          })
        })
        return pull
      })
    )
  )
}
