// The models and errors of Fanout: declared here and re-exported by Fanout.ts, so the batch
// machinery (./forms.ts, ./engine.ts) never imports the public module.
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Result from "effect/Result"
import type { RedirectError } from "../http/redirect.ts"
import type { RetryError } from "../retry/errors.ts"
import { redactUrl } from "../url.ts"
import type * as Adaptive from "./adaptive.ts"

/**
 * Options of every batch.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<A, E, R> {
  /**
   * Maximum requests in flight. Worker fibers start as requests do, so a large value costs
   * only the requests actually in flight (`1e9` over three URLs runs three). A retry waiting out
   * a `Retry-After` holds no slot: its origin is paused meanwhile (nothing new is sent there)
   * and other origins' items run in its slot; a plain backoff waits in its slot.
   * @default 16
   */
  readonly concurrency?: number | undefined
  /**
   * Maximum requests in flight per origin (`scheme://host:port` as the URL parser resolves it:
   * `http://127.1:08080` and `http://127.0.0.1:8080` share one limit). Requests for a busy origin
   * wait in its queue (up to `max(1024, 16 × concurrency)` read ahead of the workers, 65,536 at
   * most) while other origins' requests go first. `Fanout.adaptive` instead finds each origin's
   * limit from its latency and its 429/503 answers.
   * @default no limit beyond `concurrency`
   */
  readonly perHost?: number | AdaptiveLimit | undefined
  /**
   * Time allowed for the whole batch. Requests still running then are interrupted; in settled
   * forms they and the ones never started get `DeadlineExceeded`, other forms fail with it.
   * Streams hand those out as the consumer takes them, so the rest of a long or endless input is
   * read only as far as the consumer goes. `allSettled` gives every input item its result, so over
   * an endless input it never ends, deadline or not (it reads on, each item `DeadlineExceeded`):
   * use a stream form for endless inputs. Retries never wait past it. More than 0 when set.
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
   * Let the client trace each request: a client span per request under the batch span, its own
   * `traceparent` sent (with a recording tracer, a span per request costs more than the request).
   * Without it, requests send the batch span's `traceparent` (on `NodeHttpClient`).
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
 * Options of `Fanout.pipeline` and `Fanout.pipelineSettled`.
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
  /**
   * Retries so far (a request retried twice counts twice, a redirect hop's retries included),
   * counted as each is decided, before its wait: a batch that ends during that wait never sends it.
   */
  readonly retried: number
  /**
   * With `perHost: Fanout.adaptive()`: each origin's limit now and why (a getter, computed
   * when read: read it in the callback; a copy such as `{ ...progress }` leaves it out). The
   * origins with requests, and the last 1,024 to go idle (see `Fanout.adaptive`).
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
  /** Latency (ms) to the response head of the last round of responses (its capped mean, see `Fanout.adaptive`). */
  readonly latencyMillis: number | undefined
  /** Why the limit last changed. */
  readonly reason: AdaptiveReason
  /** While a `Retry-After` pauses the origin: until when (the `Clock`'s monotonic ms). */
  readonly pausedUntil: number | undefined
}

/**
 * Why an adaptive limit last changed: still `"initial"`; `"slow-start"` (x1.5 a round, about
 * two round trips, until the first sign of congestion); `"headroom"` (latency at the
 * baseline, probing upwards); `"queueing"` (latency above the baseline, lowered by the
 * ratio); `"probe"` (one round at 3/4 of the limit, every 10 s, to re-measure the baseline);
 * `"overload"` (a 429, 503, refused or reset connection: halved); `"timeout"` (halved);
 * `"retry-after"` (halved, and the origin paused).
 *
 * @since 0.1.0
 * @category models
 */
export type AdaptiveReason = Adaptive.Reason

/**
 * Options of `Fanout.adaptive`.
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
 * A `perHost` that adapts to each origin, made by `Fanout.adaptive`.
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
 * One item's request was interrupted from inside (its own read, an interrupted client call) or
 * cancelled from outside (`Fanout.cancellable`) while the batch went on; in settled forms only
 * that item fails. `url` is kept redacted as `Retry.DeadlineExceeded`'s (user info, and the
 * query parameters named in `UrlParams.CurrentRedactedNames`).
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
  constructor(props: { readonly index: number; readonly method: string; readonly url: string }) {
    super({ ...props, url: redactUrl(props.url) })
  }
  override get message(): string {
    return `${this.method} ${this.url} (item ${this.index}) was interrupted`
  }
}

/**
 * Why one item failed: the client's `HttpClientError` (transport, invalid URL, non-2xx status,
 * decode), the retry policy's errors, a redirect that could not be followed, an interruption of that item, or `read`'s own error.
 *
 * @since 0.1.0
 * @category errors
 */
export type ItemError<E> = HttpClientError.HttpClientError | RetryError | RedirectError | ItemInterrupted | E

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
