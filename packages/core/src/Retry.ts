/**
 * Retry policy for HTTP requests, as a service: which failures are retried, how long to wait,
 * how many times, and how much retrying the whole client may do.
 *
 * Effect's `HttpClient.retryTransient` retries every method (a `POST` that timed out may be
 * sent twice), retries forever unless given `times`, and HTTP requests have no timeout by
 * default. The default policy here closes those gaps:
 *
 * - retries transport errors (a body cut short included), attempt timeouts and
 *   408/429/500/502/503/504 responses, and
 *   only for idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`) whose body
 *   can be sent again (none, text, bytes, form data: never a `Stream` or a Node `Readable`,
 *   which the first attempt used up);
 * - treats a proxy's own answer like a response: retries a `CONNECT` refused with a status in
 *   `statuses` (a 503), never one refused with another (a 403) nor refused credentials;
 * - never retries a request that can never be sent (`InvalidUrlError`, `EncodeError`: a URL
 *   that is not `http:`/`https:`, a header name or value no client can write), nor counts it
 *   in the retry budget;
 * - waits with exponential backoff and full jitter (a random delay between 0 and
 *   `baseDelay * 2^n`, capped by `maxDelay`), and at least what `Retry-After` asks (seconds or an
 *   HTTP date), up to `maxRetryAfter`;
 * - never waits past the deadline: a `Retry-After` longer than `maxRetryAfter` or than the time
 *   left fails at once with {@link RetryAfterTooLong} instead of sleeping silently;
 * - stops after `retries` retries, and when the {@link RetryPolicy}'s retry budget is spent
 *   (retries capped at a fraction of recent requests, so a failing upstream never sees a
 *   retry storm).
 *
 * One rule for every volley request: `Http.*` helpers and `Fanout` batches alike run each
 * request, body read included, under the policy in the environment ({@link RetryPolicy}, a
 * reference holding the default policy until {@link layer}, {@link layerConfig} or
 * `Resilience.layer({ retry })` provides another). {@link withPolicy} and {@link layerClient}
 * apply it to code that calls Effect's `HttpClient` directly; `Http.*` and batches see through
 * that wrapper, so stacking it never retries a request twice.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { Budget } from "./internal/retry/budget.ts"
import { PolicyApplied, unwrap, WrappedKey } from "./internal/retry/client.ts"
import { retryLoop } from "./internal/retry/loop.ts"
import { isReplayable } from "./internal/retry/replay.ts"
import { isTlsRefusal } from "./internal/retry/tls.ts"
import { isInvalidInput, isUnsent } from "./internal/retry/unsent.ts"
import * as Validate from "./Options.ts"

/**
 * A request did not finish before its deadline (the batch deadline or the policy's total
 * `timeout`).
 *
 * @example
 * ```ts
 * import { Retry } from "@volley/core"
 *
 * const error = new Retry.DeadlineExceeded({ method: "GET", url: "http://127.0.0.1:8080/slow" })
 * error.message // "GET http://127.0.0.1:8080/slow did not finish before its deadline"
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadlineExceeded extends Data.TaggedError("DeadlineExceeded")<{
  readonly method: string
  readonly url: string
}> {
  override get message(): string {
    return `${this.method} ${this.url} did not finish before its deadline`
  }
}

/**
 * The server asked to retry later (`Retry-After`) than the policy's cap or than the time left
 * before the deadline, so the request failed at once instead of sleeping. `cause` is the
 * `HttpClientError` of the response that carried the header.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const program = Fanout.all(["http://127.0.0.1:8080/busy"], { deadline: "10 seconds" }).pipe(
 *   Effect.catchTag("RetryAfterTooLong", (e) => Effect.succeed(`come back in ${e.retryAfterMillis} ms`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RetryAfterTooLong extends Data.TaggedError("RetryAfterTooLong")<{
  readonly method: string
  readonly url: string
  readonly retryAfterMillis: number
  readonly limitMillis: number
  /** `"cap"`: longer than `maxRetryAfter`; `"deadline"`: longer than the time left. */
  readonly limit: "cap" | "deadline"
  readonly cause: HttpClientError.HttpClientError
}> {
  override get message(): string {
    const what = this.limit === "cap" ? "the maxRetryAfter cap of" : "the time left before the deadline,"
    return `${this.method} ${this.url} was asked to retry after ${this.retryAfterMillis} ms, more than ${what} ${this.limitMillis} ms`
  }
}

/**
 * Failures the policy itself adds to a request's own errors.
 *
 * @since 0.1.0
 * @category errors
 */
export type RetryError = DeadlineExceeded | RetryAfterTooLong | Cause.TimeoutError

/**
 * Retry-budget options: retries in the last `window` may reach `ratio` of the requests seen in
 * it, plus `minPerSecond` per second of the window.
 *
 * @since 0.1.0
 * @category models
 */
export interface BudgetOptions {
  /**
   * Retries allowed per request seen in the window.
   * @default 0.2
   */
  readonly ratio?: number | undefined
  /**
   * Retries per second of the window always allowed, so a client that sends little can still
   * retry. A reserve for the whole window, as in Finagle's budget, not a rate: with a 1-hour
   * window, 36,000 retries may come in one burst. Keep the window short when that matters.
   * @default 10
   */
  readonly minPerSecond?: number | undefined
  /**
   * Length of the sliding window, in whole seconds (at least 1). Any length costs the same
   * small, fixed memory: up to 600 seconds requests age out second by second, beyond that in
   * steps of 1/600 of the window.
   * @default "10 seconds"
   */
  readonly window?: Duration.Input | undefined
}

/**
 * Options of a retry policy. Every field is optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Maximum retries after the first attempt (`0` disables retrying).
   * @default 3
   */
  readonly retries?: number | undefined
  /**
   * Backoff before the first retry; doubles for each retry.
   * @default "100 millis"
   */
  readonly baseDelay?: Duration.Input | undefined
  /**
   * Cap of the backoff delay.
   * @default "10 seconds"
   */
  readonly maxDelay?: Duration.Input | undefined
  /**
   * Longest `Retry-After` honoured; a longer one fails with `RetryAfterTooLong`.
   * @default "60 seconds"
   */
  readonly maxRetryAfter?: Duration.Input | undefined
  /**
   * Full jitter: each backoff is a random delay between 0 and its exponential ceiling.
   * `false` waits the ceiling itself (deterministic, for tests).
   * @default true
   */
  readonly jitter?: boolean | undefined
  /**
   * Methods that may be retried (upper case). Others are sent once.
   * @default ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
   */
  readonly methods?: ReadonlyArray<string> | undefined
  /**
   * Response statuses that are retried.
   * @default [408, 429, 500, 502, 503, 504]
   */
  readonly statuses?: ReadonlyArray<number> | undefined
  /**
   * Timeout of each attempt (failing with `TimeoutError`, which is retried). Off by default:
   * it costs a timer fiber per request, and `@volley/node`'s client already bounds headers and
   * body with undici timeouts. More than 0 when set.
   * @default none
   */
  readonly attemptTimeout?: Duration.Input | undefined
  /**
   * Total time for a request, all attempts and waits included (fails with `DeadlineExceeded`).
   * More than 0 when set; leave it out for none.
   * @default none
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * Retry budget shared by every request under this policy; `false` disables it.
   * @default { ratio: 0.2, minPerSecond: 10, window: "10 seconds" }
   */
  readonly budget?: BudgetOptions | false | undefined
}

/**
 * A validated policy. Build one with {@link make}; provide it with {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  readonly retries: number
  readonly baseDelayMillis: number
  readonly maxDelayMillis: number
  readonly maxRetryAfterMillis: number
  readonly jitter: boolean
  readonly methods: ReadonlySet<string>
  readonly statuses: ReadonlySet<number>
  readonly attemptTimeoutMillis: number | undefined
  readonly timeoutMillis: number | undefined
  /** Shared, mutable retry budget (`undefined` when disabled). */
  readonly budget: Budget | undefined
}

/**
 * Hooks a caller (a fan-out batch) passes to {@link run}.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** Absolute deadline in `Clock` milliseconds; the policy never waits past it. */
  readonly deadline?: number | undefined
  /** Called before each retry's wait. */
  readonly onRetry?: (() => void) | undefined
}

const defaultMethods = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] as const
const defaultStatuses = [408, 429, 500, 502, 503, 504] as const

/**
 * Validates options and builds a policy with a fresh retry budget. Fails with
 * `InvalidOptionsError` naming the first bad option.
 *
 * @example
 * ```ts
 * import { Retry } from "@volley/core"
 *
 * const policy = Retry.make({ retries: 5, baseDelay: "50 millis", timeout: "10 seconds" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Policy, Validate.InvalidOptionsError> =>
  Effect.gen(function* () {
    const retries = yield* Validate.positiveInt("retries", options.retries ?? 3, 0)
    const baseDelay = yield* Validate.duration("baseDelay", options.baseDelay ?? "100 millis")
    const maxDelay = yield* Validate.duration("maxDelay", options.maxDelay ?? "10 seconds")
    const maxRetryAfter = yield* Validate.duration("maxRetryAfter", options.maxRetryAfter ?? "60 seconds")
    const attemptTimeout = yield* Validate.optional(options.attemptTimeout, (d) =>
      Validate.duration("attemptTimeout", d, { positive: true })
    )
    const timeout = yield* Validate.optional(options.timeout, (d) =>
      Validate.duration("timeout", d, { positive: true })
    )
    // Trimmed and checked: "GET, PUT" from the environment must not leave " PUT" never retried.
    const methods = (options.methods ?? defaultMethods).map((m) => m.trim().toUpperCase())
    for (const method of methods) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Z-]+$/.test(method)) {
        return yield* invalid("methods", `must hold HTTP methods, got ${JSON.stringify(method)}`)
      }
    }
    const statuses = options.statuses ?? defaultStatuses
    for (const status of statuses) {
      if (!Number.isInteger(status) || status < 100 || status > 599) {
        return yield* invalid("statuses", `must hold HTTP statuses (100-599), got ${status}`)
      }
    }
    const budget = options.budget === false ? undefined : yield* makeBudget(options.budget ?? {})
    return {
      retries,
      baseDelayMillis: Duration.toMillis(baseDelay),
      maxDelayMillis: Duration.toMillis(maxDelay),
      maxRetryAfterMillis: Duration.toMillis(maxRetryAfter),
      jitter: options.jitter ?? true,
      methods: new Set(methods),
      statuses: new Set(statuses),
      attemptTimeoutMillis: attemptTimeout === undefined ? undefined : Duration.toMillis(attemptTimeout),
      timeoutMillis: timeout === undefined ? undefined : Duration.toMillis(timeout),
      budget
    } satisfies Policy
  })

/**
 * The retry policy in effect. A reference: without a layer, batches use the default policy
 * (3 retries, 100 ms full-jitter backoff, idempotent methods only, a 20% retry budget).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry } from "@volley/core"
 *
 * const retries = Effect.map(Retry.RetryPolicy, (policy) => policy.retries) // 3
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export const RetryPolicy: Context.Reference<Policy> = Context.Reference<Policy>("@volley/core/Retry/RetryPolicy", {
  defaultValue: () => Effect.runSync(make())
})

/**
 * Provides a validated policy as the {@link RetryPolicy}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout, Retry } from "@volley/core"
 *
 * const program = Fanout.allSettled(["http://127.0.0.1:8080/a"]).pipe(
 *   Effect.provide(Retry.layer({ retries: 5, statuses: [503] }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, Validate.InvalidOptionsError> =>
  Layer.effect(RetryPolicy, make(options))

/**
 * Reads the policy from `Config` (environment by default): `<prefix>_RETRIES`, `_BASE_DELAY`,
 * `_MAX_DELAY`, `_MAX_RETRY_AFTER`, `_ATTEMPT_TIMEOUT`, `_TIMEOUT` (durations like `"250 millis"`),
 * `_JITTER` (`true` | `false`), `_METHODS` and `_STATUSES` (comma-separated, e.g. `GET,PUT` and
 * `503,504`), `_BUDGET_RATIO` (a number; `0` disables the budget), `_BUDGET_MIN_PER_SECOND`,
 * `_BUDGET_WINDOW`. Unset keys keep their defaults.
 *
 * @example
 * ```ts
 * import { Retry } from "@volley/core"
 *
 * // VOLLEY_RETRY_RETRIES=5 VOLLEY_RETRY_TIMEOUT="10 seconds"
 * const RetryLive = Retry.layerConfig()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  prefix = "VOLLEY_RETRY"
): Layer.Layer<never, Validate.InvalidOptionsError | Config.ConfigError> =>
  Layer.effect(
    RetryPolicy,
    Effect.gen(function* () {
      const read = yield* Config.all({
        retries: Validate.optionalConfig(Config.Int("RETRIES")),
        baseDelay: Validate.optionalConfig(Config.Duration("BASE_DELAY")),
        maxDelay: Validate.optionalConfig(Config.Duration("MAX_DELAY")),
        maxRetryAfter: Validate.optionalConfig(Config.Duration("MAX_RETRY_AFTER")),
        attemptTimeout: Validate.optionalConfig(Config.Duration("ATTEMPT_TIMEOUT")),
        timeout: Validate.optionalConfig(Config.Duration("TIMEOUT")),
        jitter: Validate.optionalConfig(Config.Boolean("JITTER")),
        methods: Validate.optionalConfig(Config.Array(Schema.String, "METHODS")),
        statuses: Validate.optionalConfig(Config.Array(Schema.NumberFromString, "STATUSES")),
        budgetRatio: Validate.optionalConfig(Config.Number("BUDGET_RATIO")),
        budgetMinPerSecond: Validate.optionalConfig(Config.Number("BUDGET_MIN_PER_SECOND")),
        budgetWindow: Validate.optionalConfig(Config.Duration("BUDGET_WINDOW"))
      }).pipe(Config.nested(prefix))
      const { budgetRatio: ratio, budgetMinPerSecond: minPerSecond, budgetWindow: window, ...options } = read
      return yield* make({
        ...options,
        budget: ratio === 0 ? false : { ratio, minPerSecond, window }
      })
    })
  )

/**
 * Runs `attempt` (one try of `request`, including reading its body) under `policy`: per-attempt
 * and total timeouts, retries of retryable failures with backoff, `Retry-After`, the deadline
 * and the retry budget. The building block of fan-out batches and {@link withPolicy}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HttpClient, HttpClientRequest } from "effect/http"
 * import { Retry } from "@volley/core"
 *
 * const request = HttpClientRequest.get("http://127.0.0.1:8080/flaky")
 * const body = Effect.gen(function* () {
 *   const client = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
 *   const policy = yield* Retry.RetryPolicy
 *   return yield* Retry.run(policy, request, Effect.flatMap(client.execute(request), (r) => r.text))
 * })
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const run = <A, E, R>(
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options?: RunOptions
): Effect.Effect<A, E | RetryError, R> => {
  const retrying = policy.retries > 0 && policy.methods.has(request.method) && isReplayable(request)
  const timed =
    options?.deadline !== undefined || policy.timeoutMillis !== undefined || policy.attemptTimeoutMillis !== undefined
  const budget = policy.budget
  // Every request counts in the budget, retried method or not: it caps retries at a fraction
  // of all recent requests. Counted when it runs, not when it is built (a `run` effect may run
  // many times), and taken back if it could never be sent (`isUnsent`).
  if (!timed) {
    // The common case in a batch: nothing to time, so nothing costs until an attempt fails.
    const run = retrying
      ? Effect.catch(attempt, (error) => afterFailure(policy, request, attempt, error, options))
      : attempt
    if (budget === undefined) return run
    return Effect.withFiber((fiber) => {
      const start = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
      budget.request(start)
      // One handler for both: nothing but the attempt runs until it fails.
      return Effect.catch(attempt, (error) => {
        if (isUnsent(error)) return uncount(budget, start, error)
        return retrying ? afterFailure(policy, request, attempt, error, options) : Effect.fail(error)
      })
    })
  }
  return Effect.withFiber((fiber) => {
    const start = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
    budget?.request(start)
    let deadline = options?.deadline ?? Number.POSITIVE_INFINITY
    if (policy.timeoutMillis !== undefined) deadline = Math.min(deadline, start + policy.timeoutMillis)
    const run = retryLoop(policy, request, attempt, options, fiber, deadline).loop(0, start)
    return budget === undefined ? run : Effect.catch(run, (error) => uncount(budget, start, error))
  })
}

// A request that failed because it could never be sent leaves the budget as if never made.
const uncount = <E>(budget: Budget, start: number, error: E): Effect.Effect<never, E> => {
  if (isUnsent(error)) budget.unrequest(start)
  return Effect.fail(error)
}

/**
 * Goes on with a request whose first attempt failed with `error`, when the policy has no
 * timeouts: retries it if the policy allows (never waiting past `options.deadline`), else
 * fails with `error`.
 * For runners that make the first attempt themselves (a fan-out batch does, to keep the
 * success path free of retry machinery); they must count the request in the budget
 * (`policy.budget?.request(now)`), and take it back (`policy.budget?.unrequest(now)`) when
 * the first attempt failed because the request can never be sent (`InvalidUrlError`,
 * `EncodeError`).
 *
 * @example
 * ```ts
 * import { Clock, Effect } from "effect"
 * import { HttpClient, HttpClientRequest } from "effect/http"
 * import { Retry } from "@volley/core"
 *
 * const request = HttpClientRequest.get("http://127.0.0.1:8080/flaky")
 * const text = Effect.gen(function* () {
 *   const policy = yield* Retry.RetryPolicy
 *   const attempt = Effect.flatMap((yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk).execute(request), (r) => r.text)
 *   policy.budget?.request(yield* Clock.currentTimeMillis)
 *   return yield* Effect.catch(attempt, (error) => Retry.afterFailure(policy, request, attempt, error))
 * })
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const afterFailure = <A, E, R>(
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  error: E,
  options?: RunOptions
): Effect.Effect<A, E | RetryError, R> =>
  policy.retries > 0 && policy.methods.has(request.method) && isReplayable(request) && isRetryable(policy, error)
    ? Effect.withFiber((fiber) =>
        retryLoop(policy, request, attempt, options, fiber, options?.deadline ?? Number.POSITIVE_INFINITY).onFailure(
          error,
          0
        )
      )
    : Effect.fail(error)

/**
 * Applies the policy in the environment to every request of a client (status, transport
 * errors and timeouts of the response head; reading the body stays with the caller), for code
 * that calls `HttpClient` itself. `Http.*` helpers and batches need no wrapper: they apply the
 * policy themselves, body included, and run on the client underneath this one, so a request
 * is never retried by both.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HttpClient } from "effect/http"
 * import { Retry } from "@volley/core"
 *
 * const resilient = Effect.map(HttpClient.HttpClient, Retry.withPolicy)
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withPolicy = <E, R>(
  client: HttpClient.HttpClient.With<E, R>
): HttpClient.HttpClient.With<E | HttpClientError.HttpClientError | RetryError, R> => {
  const inner = unwrap(client)
  const checked = HttpClient.filterStatusOk(inner)
  const wrapped = HttpClient.makeWith(
    (request) =>
      Effect.flatMap(request, (request) =>
        Effect.withFiber((fiber) =>
          // Under `Http.*` or a batch, which apply the policy (and check the status) themselves.
          fiber.getRef(PolicyApplied)
            ? inner.execute(request)
            : Effect.flatMap(RetryPolicy, (policy) => run(policy, request, checked.execute(request)))
        )
      ),
    Effect.succeed as HttpClient.HttpClient.Preprocess<never, never>
  )
  // `Http.*` and batches find the inner client here and apply the policy once, themselves.
  return Object.assign(wrapped, { [WrappedKey]: inner })
}

/**
 * A layer that wraps the environment's `HttpClient` with {@link withPolicy}, so that code using
 * Effect's `HttpClient` directly gets the same retries as `Http.*` and `Fanout` (which see
 * through it and never retry twice).
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { HttpClient } from "effect/http"
 * import { NodeHttpClient } from "@volley/node"
 * import { Retry } from "@volley/core"
 *
 * const Client = Retry.layerClient.pipe(Layer.provide(NodeHttpClient.layer()))
 * const status = HttpClient.get("http://127.0.0.1:8080/flaky").pipe(
 *   Effect.map((response) => response.status),
 *   Effect.provide(Client)
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient: Layer.Layer<HttpClient.HttpClient, never, HttpClient.HttpClient> = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(
    HttpClient.HttpClient,
    (client) =>
      // `withPolicy`'s extra error types are all `Error`s a caller of `HttpClient` handles by tag.
      withPolicy(client) as unknown as HttpClient.HttpClient
  )
)

/**
 * Whether `policy` retries `error` (method aside): a transport error, an attempt timeout, or a
 * response whose status is in `statuses` (a proxy's refusal of `CONNECT` counts as a response
 * with its status; refused proxy credentials are never retried). Never a request that can
 * never be sent: an `InvalidUrlError`, an `EncodeError`, or a transport error that only wraps
 * the client's rejection of the request's URL or headers (undici's `UND_ERR_INVALID_ARG`,
 * Node's `ERR_INVALID_URL`, `ERR_INVALID_CHAR`...). Nor a TLS refusal that would recur: an
 * untrusted, expired or misnamed origin certificate, or no TLS version both ends speak.
 *
 * @example
 * ```ts
 * import { Cause, Effect } from "effect"
 * import { Retry } from "@volley/core"
 *
 * const yes = Effect.map(Retry.RetryPolicy, (p) => Retry.isRetryable(p, new Cause.TimeoutError()))
 * ```
 *
 * @since 0.1.0
 * @category predicates
 */
export const isRetryable = (policy: Policy, error: unknown): boolean => {
  if (Cause.isTimeoutError(error)) return true
  if (!HttpClientError.isHttpClientError(error)) return false
  const reason = error.reason
  // A TransportError that only wraps a refusal of the client's own circuit breaker or rate
  // limiter (see Resilience), of the request's own URL or headers (a client that does not
  // type those as InvalidUrlError / EncodeError), or of the origin's certificate or TLS version
  // would fail the same way again.
  if (reason._tag === "TransportError") {
    const cause = reason.cause
    if (isRefusal(cause) || isInvalidInput(cause) || isTlsRefusal(cause)) return false
    // A proxy's own answer (see Proxy): credentials it refused would be refused again, and a
    // refused CONNECT is retried as a response with that status would be. A proxy that could
    // not be reached or dropped the connection is a transport failure like any other.
    const proxy = proxyAnswer(cause)
    return proxy === undefined || (proxy !== "auth" && policy.statuses.has(proxy))
  }
  // A body cut short (socket closed mid-body) surfaces as a DecodeError whose cause is the
  // client's I/O error (it has a `code`, e.g. undici's UND_ERR_SOCKET); a body that does not
  // parse has no such code and is not retried.
  if (reason._tag === "DecodeError") return hasCode(reason.cause)
  return reason._tag === "StatusCodeError" && policy.statuses.has(reason.response.status)
}

const isRefusal = (cause: unknown): boolean =>
  typeof cause === "object" &&
  cause !== null &&
  ((cause as { _tag?: unknown })._tag === "CircuitBreakerError" ||
    (cause as { _tag?: unknown })._tag === "RateLimiterError")

// `"auth"` for a ProxyAuthenticationError, the status of a ProxyConnectionError that has one
// (the proxy's answer to CONNECT), else undefined. Read by tag, so Retry needs no Proxy import.
const proxyAnswer = (cause: unknown): "auth" | number | undefined => {
  if (typeof cause !== "object" || cause === null) return undefined
  const { _tag, status } = cause as { _tag?: unknown; status?: unknown }
  if (_tag === "ProxyAuthenticationError") return "auth"
  return _tag === "ProxyConnectionError" && typeof status === "number" ? status : undefined
}

const hasCode = (cause: unknown): boolean =>
  typeof cause === "object" && cause !== null && typeof (cause as { code?: unknown }).code === "string"

const makeBudget = (options: BudgetOptions) =>
  Effect.gen(function* () {
    const ratio = options.ratio ?? 0.2
    if (!(Number.isFinite(ratio) && ratio >= 0)) {
      return yield* invalid("budget.ratio", `must be a finite number >= 0, got ${ratio}`)
    }
    const minPerSecond = options.minPerSecond ?? 10
    if (!(Number.isFinite(minPerSecond) && minPerSecond >= 0)) {
      return yield* invalid("budget.minPerSecond", `must be a finite number >= 0, got ${minPerSecond}`)
    }
    const window = yield* Validate.duration("budget.window", options.window ?? "10 seconds")
    if (Duration.toMillis(window) < 1000) {
      return yield* invalid("budget.window", `must be at least 1 second, got ${Duration.format(window)}`)
    }
    const windowSeconds = Math.ceil(Duration.toSeconds(window))
    return new Budget({ ratio, minPerSecond, windowSeconds })
  })

const invalid = (option: string, reason: string) => Effect.fail(new Validate.InvalidOptionsError({ option, reason }))
