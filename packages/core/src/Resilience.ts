/**
 * Resilience for the environment's `HttpClient`, as one layer: the retry policy, plus optional
 * rate limiting and circuit breaking composed from Effect's `RateLimiter` and
 * `HttpClient.withCircuitBreaker` (in-memory stores, one limiter and one breaker per origin).
 *
 * `Http.*` helpers, batches and `Retry.withPolicy` retry around the wrapped client (all under
 * the one retry policy, which `retry` sets; provided over `Retry.layerClient`, this layer goes
 * under its wrapper), so the limiter spaces every attempt and the breaker counts every attempt
 * that fails (not one the policy's `attemptTimeout` interrupts,
 * see {@link CircuitBreakerOptions}). Attempts wait for the limiter in arrival order, holding
 * no token while they wait (see {@link RateLimitOptions}); those waiting when their origin's
 * circuit opens are refused at once, as the circuit refuses new ones. A request rejected by an
 * open circuit fails at once with an `HttpClientError` whose reason is a `TransportError` caused
 * by Effect's `CircuitBreakerError`; the retry policy never retries it (the circuit is open,
 * retrying would only wait for nothing), nor counts it in its retry budget (it sent nothing).
 * The limiter does not retry 429s itself: the retry policy does, honouring `Retry-After`
 * within its limits. The limits are the ones given here: an origin's response headers
 * (`RateLimit-*`, `X-RateLimit-*`, `Retry-After`) neither change the rate limit nor hold its
 * origin, nor keep the circuit open past `openDuration`.
 *
 * Everything is validated when the layer is built, and readable from `Config`
 * ({@link layerConfig}).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Layer from "effect/Layer"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { waitingForProbes } from "./internal/resilience/probes.ts"
import { sweepClock, withRateLimit } from "./internal/resilience/rateLimit.ts"
import { unwrap } from "./internal/retry/client.ts"
import { AttemptClock, UNTIMED } from "./internal/retry/loop.ts"
import { originOf } from "./internal/url.ts"
import * as Validate from "./Options.ts"
import * as Retry from "./Retry.ts"

/**
 * Rate limit per origin (or for the whole client). An attempt over the limit waits for its turn,
 * in arrival order, and takes a token only when it is sent: one interrupted while it waits (its
 * caller gave up) holds nothing, and leaves the limit to the others. In a `Fanout` batch the
 * waiting item keeps its slot of `concurrency`: give a batch over a rate-limited origin and
 * others `perHost`, or that origin's items can take every slot while they wait. The retry policy's
 * `attemptTimeout` times an attempt from when it leaves the line, so a long line never times it
 * out (where this layer is provided: its client taken elsewhere counts the wait); the policy's
 * `timeout` and a batch's `deadline` count the wait, and a request they end while it waits was
 * never sent.
 *
 * @example
 * ```ts
 * import { Resilience } from "@volley/core"
 *
 * const tenPerSecond: Resilience.RateLimitOptions = { limit: 10, window: "1 second" }
 * const Limited = Resilience.layer({ rateLimit: tenPerSecond })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface RateLimitOptions {
  /** Requests allowed per `window`, whatever rate-limit headers the origin sends. */
  readonly limit: number
  /** Length of the window. */
  readonly window: Duration.Input
  /**
   * `"token-bucket"` spreads requests over the window; `"fixed-window"` lets a window's
   * requests go at once.
   * @default "token-bucket"
   */
  readonly algorithm?: "fixed-window" | "token-bucket" | undefined
  /**
   * One limit per origin; `false` shares one limit across all origins.
   * @default true
   */
  readonly perHost?: boolean | undefined
}

/**
 * Circuit breaker per origin: opens after `failures` consecutive failed attempts (transport
 * errors, the client's own timeouts such as NodeHttpClient's `headersTimeout`, 408/500/502/503/504),
 * rejects requests for `openDuration`, then lets one probe through: the requests that come while
 * it runs wait for it (the probe, sent first, is cut by `attemptTimeout` first, which wakes
 * them), then go if it succeeded (the circuit closed) and are refused as open if it failed. An
 * attempt the retry policy's
 * `attemptTimeout` cuts short is interrupted, not failed, and is not counted: to have the breaker
 * see an origin that stops answering, bound it with the client's `headersTimeout`.
 *
 * @example
 * ```ts
 * import { Resilience } from "@volley/core"
 *
 * const breaker: Resilience.CircuitBreakerOptions = { failures: 3, openDuration: "10 seconds" }
 * const Guarded = Resilience.layer({ circuitBreaker: breaker })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface CircuitBreakerOptions {
  /**
   * Consecutive failures that open the circuit.
   * @default 5
   */
  readonly failures?: number | undefined
  /**
   * How long the circuit stays open before a probe (a `Retry-After` on the failure that opened
   * it does not make it longer). An origin with no request for this long, or for a minute if
   * that is longer, is forgotten: its circuit starts again closed, with no failures counted.
   * @default "30 seconds"
   */
  readonly openDuration?: Duration.Input | undefined
}

/**
 * What {@link layer} adds. Omitted parts are left out (the retry policy then stays whatever
 * the environment has, by default `Retry`'s default policy).
 *
 * @example
 * ```ts
 * import { Resilience } from "@volley/core"
 *
 * const options: Resilience.Options = {
 *   retry: { retries: 2 },
 *   rateLimit: { limit: 100, window: "1 minute", perHost: false }
 * }
 * const Client = Resilience.layer(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly retry?: Retry.Options | undefined
  readonly rateLimit?: RateLimitOptions | undefined
  readonly circuitBreaker?: CircuitBreakerOptions | undefined
}

/**
 * Wraps the environment's `HttpClient` with the rate limiter and circuit breaker, and provides
 * the retry policy. Fails with `InvalidOptionsError` when built with a bad option (a group of
 * options that is not an object, such as `rateLimit: null`, included). Without options, or
 * with `{}`, it changes nothing: the environment's client under the policy already in effect.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Fanout, Resilience } from "@volley/core"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const Client = Resilience.layer({
 *   retry: { retries: 4, timeout: "20 seconds" },
 *   rateLimit: { limit: 50, window: "1 second" },
 *   circuitBreaker: { failures: 5, openDuration: "10 seconds" }
 * }).pipe(Layer.provide(NodeHttpClient.layer()))
 *
 * const program = Fanout.allSettled(["http://127.0.0.1:8080/a"]).pipe(Effect.provide(Client))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError, HttpClient.HttpClient> => {
  // A JavaScript caller's `null` or `rateLimit: null` fails the build, as any bad option does.
  if (typeof options !== "object" || options === null) {
    return Layer.effectContext(Effect.flatMap(Validate.record("options", options), wrap))
  }
  const client = Layer.effectContext(wrap(options))
  return options.retry === undefined
    ? client
    : Layer.merge(
        client,
        Layer.unwrap(Effect.map(Validate.record("retry", options.retry), (retry) => Retry.layer(retry)))
      )
}

/**
 * {@link layer} from `Config` (environment by default): `<prefix>_RATE_LIMIT` and
 * `<prefix>_RATE_WINDOW` (both set to enable), `_RATE_ALGORITHM` (with those two),
 * `_BREAKER_FAILURES` (set to enable), `_BREAKER_OPEN_DURATION` (with `_BREAKER_FAILURES`); a
 * setting without its companion fails the build with `InvalidOptionsError` naming it, rather
 * than being ignored. The retry policy comes from `Retry.layerConfig()`
 * (`VOLLEY_RETRY_*`). The default prefix, `VOLLEY_HTTP`, is shared on purpose with
 * `NodeHttpClient.layerConfig()` (pool and timeouts): one namespace for the HTTP client's
 * settings, with no key in common.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Resilience } from "@volley/core"
 * import { NodeHttpClient } from "@volley/node"
 *
 * // VOLLEY_HTTP_RATE_LIMIT=20 VOLLEY_HTTP_RATE_WINDOW="1 second" VOLLEY_HTTP_BREAKER_FAILURES=5
 * const Client = Resilience.layerConfig().pipe(Layer.provide(NodeHttpClient.layer()))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  prefix = "VOLLEY_HTTP"
): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError | Config.ConfigError, HttpClient.HttpClient> =>
  Layer.merge(
    Layer.effectContext(
      Effect.gen(function* () {
        const read = yield* Config.all({
          limit: Validate.optionalConfig(Config.Int("RATE_LIMIT")),
          window: Validate.optionalConfig(Config.Duration("RATE_WINDOW")),
          algorithm: Validate.optionalConfig(Config.Literals(algorithms, "RATE_ALGORITHM")),
          failures: Validate.optionalConfig(Config.Int("BREAKER_FAILURES")),
          openDuration: Validate.optionalConfig(Config.Duration("BREAKER_OPEN_DURATION"))
        }).pipe(Config.nested(prefix))
        if ((read.limit === undefined) !== (read.window === undefined)) {
          return yield* Effect.fail(
            new Validate.InvalidOptionsError({
              option: `${prefix}_RATE_LIMIT`,
              reason: `must be set together with ${prefix}_RATE_WINDOW`
            })
          )
        }
        // A setting of a part left off would be dropped without a word: a breaker's open
        // duration with no failure count, an algorithm with no limit.
        if (read.algorithm !== undefined && read.limit === undefined) {
          return yield* Effect.fail(
            new Validate.InvalidOptionsError({
              option: `${prefix}_RATE_ALGORITHM`,
              reason: `must be set together with ${prefix}_RATE_LIMIT and ${prefix}_RATE_WINDOW`
            })
          )
        }
        if (read.openDuration !== undefined && read.failures === undefined) {
          return yield* Effect.fail(
            new Validate.InvalidOptionsError({
              option: `${prefix}_BREAKER_OPEN_DURATION`,
              reason: `must be set together with ${prefix}_BREAKER_FAILURES`
            })
          )
        }
        return yield* wrap({
          rateLimit:
            read.limit === undefined || read.window === undefined
              ? undefined
              : { limit: read.limit, window: read.window, algorithm: read.algorithm },
          circuitBreaker:
            read.failures === undefined ? undefined : { failures: read.failures, openDuration: read.openDuration }
        }).pipe(Validate.configKeys(prefix, configKeys))
      })
    ),
    Retry.layerConfig()
  )

// ---------------------------------------------------------------------------------------------

const algorithms = ["token-bucket", "fixed-window"] as const

// The keys `layerConfig` reads each option from, named in its `InvalidOptionsError`s.
const configKeys = {
  "rateLimit.limit": "RATE_LIMIT",
  "rateLimit.window": "RATE_WINDOW",
  "circuitBreaker.failures": "BREAKER_FAILURES",
  "circuitBreaker.openDuration": "BREAKER_OPEN_DURATION"
}

// One circuit per origin, keyed as the rate limit's lines are (Effect's default key is close
// but its own): the line asks the circuit of the request's key.
const breakerKey = (request: HttpClientRequest.HttpClientRequest): string => originOf(request.url)

// Fails with the breaker's own refusal when the request's circuit is open. A circuit past its
// open time reads "Open" until the next admission makes it half-open: that one no longer refuses.
const refuseOpen =
  (breaker: CircuitBreaker.CircuitBreaker) =>
  (request: HttpClientRequest.HttpClientRequest): Effect.Effect<void, CircuitBreaker.CircuitBreakerError> =>
    Effect.flatMap(breaker.state(breakerKey(request)), (state) =>
      state._tag === "Open" && Duration.toMillis(state.retryAfter) > 0
        ? Effect.fail(
            new CircuitBreaker.CircuitBreakerError({
              reason: new CircuitBreaker.CircuitOpen({ key: state.key, retryAfter: state.retryAfter })
            })
          )
        : Effect.void
    )

// How long a circuit's state outlives its origin's last request: never less than a circuit stays
// open, nor than a minute (failures a minute apart count as consecutive).
const breakerIdleTime = (openDuration: Duration.Duration): Duration.Duration =>
  Duration.max(openDuration, Duration.minutes(1))

const wrap = (options: Options) =>
  Effect.gen(function* () {
    // Typed loosely while wrapping (each wrapper adds its error type); narrowed back at the end.
    const given = yield* HttpClient.HttpClient
    // Over `Retry.layerClient`, the limiter and breaker go under its retries (and the wrapper back
    // on top): above it, a direct `HttpClient` call's retries skipped both, every one unspaced and
    // uncounted.
    const inner = unwrap(given)
    let client = inner as unknown as HttpClient.HttpClient.With<unknown>
    // Built first: the rate limit's line refuses a request whose circuit opened while it waited.
    const breakerOptions = options.circuitBreaker
    let breaker: CircuitBreaker.CircuitBreaker | undefined
    if (breakerOptions !== undefined) {
      yield* Validate.record("circuitBreaker", breakerOptions)
      const failures = yield* Validate.positiveInt("circuitBreaker.failures", breakerOptions.failures ?? 5)
      const openDuration = yield* Validate.duration(
        "circuitBreaker.openDuration",
        breakerOptions.openDuration ?? "30 seconds"
      )
      breaker = yield* CircuitBreaker.make({
        tripPolicy: CircuitBreaker.consecutive(failures),
        openDuration,
        // Open for `openDuration`, as documented: a failure's Retry-After (up to an hour by
        // default) does not stretch it.
        maxOpenDuration: openDuration
      }).pipe(
        // The store's default keeps every origin an hour after its last request (6.7 MB per
        // 20,000 origins, a crawler's memory growing for that hour); an origin idle for
        // `breakerIdleTime` is forgotten instead, and starts again closed.
        Effect.provide(CircuitBreaker.layerStoreMemory({ idleTimeToLive: breakerIdleTime(openDuration) }))
      )
    }
    const rateLimit = options.rateLimit
    if (rateLimit !== undefined) {
      yield* Validate.record("rateLimit", rateLimit)
      const limit = yield* Validate.positiveInt("rateLimit.limit", rateLimit.limit)
      const window = yield* Validate.duration("rateLimit.window", rateLimit.window, { positive: true })
      const algorithm = yield* Validate.oneOf("rateLimit.algorithm", rateLimit.algorithm ?? "token-bucket", algorithms)
      const perHost = yield* Validate.oneOf("rateLimit.perHost", rateLimit.perHost ?? true, [true, false])
      // The store is built in the layer's scope: its sweep of expired buckets is a fiber of that
      // scope. Provided to `make` alone, its scope closed as `make` returned, which stopped the
      // sweep and kept a bucket for every origin ever limited, for the client's life. Fresh: a
      // store of its own, never one memoised by another layer (whose keys would be shared). Its
      // sweep keeps no process running (see `sweepClock`).
      const clock = yield* Effect.clockWith(Effect.succeed)
      const store = yield* Layer.build(Layer.fresh(RateLimiter.layerStoreMemory)).pipe(
        Effect.provideService(Clock.Clock, sweepClock(clock))
      )
      const limiter = yield* RateLimiter.make.pipe(Effect.provideContext(store))
      // Not Effect's `HttpClient.withRateLimiter`: its wait reserves a token before sleeping, so a
      // request interrupted while waiting (by its caller, or by the retry policy's
      // `attemptTimeout`) kept a slot it never used. The limit is the caller's: response headers
      // (RateLimit-*, Retry-After) neither raise it nor hold the origin; 429s are the retry policy's.
      client = withRateLimit(client, {
        limiter,
        key: perHost ? (request) => originOf(request.url) : () => "volley",
        limit,
        window,
        algorithm,
        // The breaker admitted the request as it joined the line: one whose circuit opened while it
        // waited is refused when its turn comes, at once, not sent to the origin the breaker gave up on.
        ready: breaker === undefined ? undefined : refuseOpen(breaker)
      })
    }
    if (breaker !== undefined) {
      client = waitingForProbes(
        HttpClient.withCircuitBreaker(client, { breaker, key: breakerKey }),
        breaker,
        breakerKey
      )
    }
    // Nothing added: the client as it is, with its own errors and fast paths (a batch's).
    if (rateLimit === undefined && breakerOptions === undefined) return Context.make(HttpClient.HttpClient, given)
    // The limiter and breaker fail with their own errors; callers of an `HttpClient` handle
    // `HttpClientError`s, so those become TransportErrors (Retry.isRetryable skips them). Any
    // other error of the client underneath stays as it is: a `Retry.withPolicy` wrapper's
    // `RetryAfterTooLong` made a TransportError would be retried by a loop above it.
    const wrapped = HttpClient.transform(client, (effect, request) =>
      Effect.mapError(effect, (error) =>
        error instanceof CircuitBreaker.CircuitBreakerError || error instanceof RateLimiter.RateLimiterError
          ? new HttpClientError.HttpClientError({
              reason: new HttpClientError.TransportError({ request, cause: error, description: error.message })
            })
          : error
      )
    ) as HttpClient.HttpClient
    const context = Context.make(
      HttpClient.HttpClient,
      inner === given ? wrapped : (Retry.withPolicy(wrapped) as unknown as HttpClient.HttpClient)
    )
    // Attempts may wait for the limiter: the retry policy's `attemptTimeout` leaves that out.
    return rateLimit === undefined ? context : Context.add(context, AttemptClock, UNTIMED)
  })
