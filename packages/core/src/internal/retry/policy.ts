// The retry policy as data: its options, their validation, the policy in effect (a reference)
// and which failures it retries. Retry.ts re-exports all of it; internal code reads it here.
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import { isToken } from "../http/token.ts"
import * as Validate from "../options.ts"
import { Budget } from "./budget.ts"
import { isTlsRefusal } from "./tls.ts"
import { isInvalidInput, isRefusal, isUnsendableScheme } from "./unsent.ts"

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
   * Full jitter: each backoff is a random delay between 0 and its exponential ceiling; after a
   * `Retry-After` longer than that ceiling, the wait is the `Retry-After` plus such a delay, so the
   * requests an origin sent away together do not all come back at once.
   * `false` waits the ceiling itself, or the `Retry-After` (deterministic, for tests).
   * @default true
   */
  readonly jitter?: boolean | undefined
  /**
   * Methods that may be retried (upper case). Others are sent once, unless the request carries an
   * `Idempotency-Key` header: a server that takes one deduplicates the request, so a POST or PATCH
   * with one is retried too (as Stripe's and PayPal's SDKs do).
   * @default ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]
   */
  readonly methods?: ReadonlyArray<string> | undefined
  /**
   * Response statuses that are retried.
   * @default [408, 429, 500, 502, 503, 504]
   */
  readonly statuses?: ReadonlyArray<number> | undefined
  /**
   * Timeout of each attempt (failing with a `TimeoutError` that names the request, e.g. `GET <url>
   * timed out after 2s (attemptTimeout)`, which is retried). It counts from when
   * the attempt may go: a wait in volley's own line before it is sent (`Resilience`'s rate
   * limit, an adaptive origin's `Retry-After` pause, a slot at a redirect's origin under
   * `perHost`) is left out; `timeout` and a batch's `deadline` count it. Off by default: it
   * costs a timer fiber per request, and `@volley/node`'s client already bounds headers and
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
 * A validated policy. Build one with {@link make}; provide it with `Retry.layer`.
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
 * Hooks a caller (a fan-out batch) passes to `Retry.run`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /** Absolute deadline in `Clock` milliseconds; the policy never waits past it. */
  readonly deadline?: number | undefined
  /** Called as each retry is decided, before its wait (so also for one interrupted while waiting). */
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
    yield* Validate.record("options", options)
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
    const methods: Array<string> = []
    for (const m of yield* Validate.array("methods", options.methods ?? defaultMethods)) {
      const method = typeof m === "string" ? m.trim().toUpperCase() : undefined
      if (method === undefined || !isToken(method)) {
        return yield* invalid("methods", `must hold HTTP methods, got ${JSON.stringify(method ?? m) ?? String(m)}`)
      }
      methods.push(method)
    }
    const statuses = (yield* Validate.array("statuses", options.statuses ?? defaultStatuses)) as ReadonlyArray<number>
    for (const status of statuses) {
      if (!Number.isInteger(status) || status < 100 || status > 599) {
        return yield* invalid("statuses", `must hold HTTP statuses (100-599), got ${status}`)
      }
    }
    // `budget: true` or a string from JavaScript would otherwise build the default budget
    // without a word (a `null` is unset, as for the other options).
    const budgetOptions = options.budget ?? {}
    if (budgetOptions !== false && (typeof budgetOptions !== "object" || Array.isArray(budgetOptions))) {
      return yield* invalid("budget", `must be an object of budget options or false, got ${show(budgetOptions)}`)
    }
    const budget = budgetOptions === false ? undefined : yield* makeBudget(budgetOptions)
    return {
      retries,
      baseDelayMillis: Duration.toMillis(baseDelay),
      maxDelayMillis: Duration.toMillis(maxDelay),
      maxRetryAfterMillis: Duration.toMillis(maxRetryAfter),
      jitter: yield* Validate.oneOf("jitter", options.jitter ?? true, [true, false]),
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
 * Whether `policy` retries `error` (method aside): a transport error, an attempt timeout, or a
 * response whose status is in `statuses` (a proxy's refusal of `CONNECT` counts as a response
 * with its status; refused proxy credentials are never retried). Never a request that can
 * never be sent: an `InvalidUrlError`, an `EncodeError`, or a transport error that only wraps
 * the client's rejection of the request's URL or headers (undici's `UND_ERR_INVALID_ARG`,
 * Node's `ERR_INVALID_URL`, `ERR_INVALID_CHAR`...). Nor a TLS refusal that would recur: an
 * untrusted, expired or misnamed certificate of the origin or of an `https://` proxy, no TLS
 * version both ends speak, or the server's alert refusing the handshake (a client certificate it
 * requires or does not accept; an origin that speaks only HTTP/2 and a client without `http2`).
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
  if (final.has(error as object)) return false
  if (Cause.isTimeoutError(error)) return true
  if (!HttpClientError.isHttpClientError(error)) return false
  const reason = error.reason
  // A TransportError that only wraps a refusal of the client's own circuit breaker or rate
  // limiter (see Resilience), of the request's own URL or headers (a client that does not
  // type those as InvalidUrlError / EncodeError, such as a URL of a scheme it cannot send), or of
  // the origin's certificate or TLS version would fail the same way again.
  if (reason._tag === "TransportError") {
    const cause = reason.cause
    if (isRefusal(cause) || isInvalidInput(cause) || isUnsendableScheme(reason.request)) return false
    if (isTlsRefusal(cause) || isClosedClient(cause)) return false
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

// The client itself was closed or destroyed (its layer's scope closed under a request still in
// flight, a detached one): every retry would fail the same way, at once, for the backoff's length.
const isClosedClient = (cause: unknown): boolean => {
  const code = typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined
  return code === "UND_ERR_DESTROYED" || code === "UND_ERR_CLOSED"
}

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

const show = (value: unknown): string =>
  Array.isArray(value) ? "an array" : typeof value === "string" ? JSON.stringify(value) : String(value)

const invalid = (option: string, reason: string) => Effect.fail(new Validate.InvalidOptionsError({ option, reason }))

// Failures an inner retry loop already gave up on (a redirect hop's, run under the policy
// inside the first request's attempt): retrying the outer request would run the chain again.
const final = new WeakSet<object>()

/** Marks `error` as final: no retry loop retries it again. */
export const markFinalUnsafe = (error: unknown): void => {
  if (typeof error === "object" && error !== null) final.add(error)
}

/** {@link markFinalUnsafe} as an effect. */
export const markFinal = (error: unknown): Effect.Effect<void> => Effect.sync(() => markFinalUnsafe(error))
