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
 *   only for idempotent methods (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`), or
 *   a request carrying an `Idempotency-Key` header (its server deduplicates it), whose body
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
 * - times each attempt (`attemptTimeout`) from when it may go, not while it waits in volley's
 *   own line (`Resilience`'s rate limit, an adaptive origin's `Retry-After` pause); the total
 *   `timeout` and a batch's `deadline` bound those waits too;
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
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import {
  executeApplied,
  HopStrip,
  PolicyApplied,
  unmarked,
  unwrap,
  WrappedKey,
  wrapperBuilt
} from "./internal/retry/client.ts"
import type { RetryError } from "./internal/retry/errors.ts"
import { run } from "./internal/retry/loop.ts"
import { make, type Options, type Policy, RetryPolicy } from "./internal/retry/policy.ts"
import * as Validate from "./Options.ts"

export { DeadlineExceeded, RetryAfterTooLong, type RetryError } from "./internal/retry/errors.ts"
export { afterFailure, isOutOfTime, run } from "./internal/retry/loop.ts"
export {
  type BudgetOptions,
  isRetryable,
  make,
  type Options,
  type Policy,
  RetryPolicy,
  type RunOptions
} from "./internal/retry/policy.ts"

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
 * `503,504`), `_BUDGET` (`false` disables the budget, as `budget: false` does), `_BUDGET_RATIO`,
 * `_BUDGET_MIN_PER_SECOND`, `_BUDGET_WINDOW` (as the `budget` option's fields: a ratio of `0` keeps
 * the per-second reserve; set with `_BUDGET=false`, they fail the build with `InvalidOptionsError`
 * naming them, rather than being ignored). Unset keys keep their defaults.
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
        budget: Validate.optionalConfig(Config.Boolean("BUDGET")),
        budgetRatio: Validate.optionalConfig(Config.Number("BUDGET_RATIO")),
        budgetMinPerSecond: Validate.optionalConfig(Config.Number("BUDGET_MIN_PER_SECOND")),
        budgetWindow: Validate.optionalConfig(Config.Duration("BUDGET_WINDOW"))
      }).pipe(Config.nested(prefix))
      const { budget, budgetRatio: ratio, budgetMinPerSecond: minPerSecond, budgetWindow: window, ...options } = read
      // A budget setting with the budget off would be dropped without a word.
      const setting = [
        ["BUDGET_RATIO", ratio],
        ["BUDGET_MIN_PER_SECOND", minPerSecond],
        ["BUDGET_WINDOW", window]
      ].find(([, value]) => value !== undefined)?.[0]
      if (budget === false && setting !== undefined) {
        return yield* new Validate.InvalidOptionsError({
          option: `${prefix}_${setting}`,
          reason: `must not be set with ${prefix}_BUDGET=false, which turns the budget off`
        })
      }
      return yield* make({
        ...options,
        budget: budget === false ? false : { ratio, minPerSecond, window }
      }).pipe(Validate.configKeys(prefix, configKeys))
    })
  )

// The keys `layerConfig` reads each option from, named in its `InvalidOptionsError`s.
const configKeys = {
  retries: "RETRIES",
  baseDelay: "BASE_DELAY",
  maxDelay: "MAX_DELAY",
  maxRetryAfter: "MAX_RETRY_AFTER",
  attemptTimeout: "ATTEMPT_TIMEOUT",
  timeout: "TIMEOUT",
  jitter: "JITTER",
  methods: "METHODS",
  statuses: "STATUSES",
  "budget.ratio": "BUDGET_RATIO",
  "budget.minPerSecond": "BUDGET_MIN_PER_SECOND",
  "budget.window": "BUDGET_WINDOW"
}

/**
 * Applies the policy in the environment to every request of a client (status, transport
 * errors and timeouts of the response head; reading the body stays with the caller), for code
 * that calls `HttpClient` itself. Responses come back as the client returns them: one with a
 * status the policy retries is sent again while the policy allows, and the last one is
 * returned when it gives up (a `Retry-After` past `maxRetryAfter` fails with
 * `RetryAfterTooLong`, its body drained); any other status, a 404 or a redirect, is returned at
 * once (so `HttpClient.followRedirects` and `filterStatusOk` work over it as over any client). `Http.*` helpers and batches need no wrapper: they apply the
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
  wrapperBuilt()
  // A response with a status the policy retries is a failure while it may be retried; any other
  // response is the caller's, as the inner client returns it (a 404, a redirect for
  // `HttpClient.followRedirects`), and so is the last retried one once the policy gives up.
  const attempt = (policy: Policy, request: HttpClientRequest.HttpClientRequest) =>
    Effect.flatMap(executeApplied(inner, request), (response) =>
      policy.statuses.has(response.status) ? Effect.fail(retryable(response)) : Effect.succeed(response)
    )
  // A redirect hop across origins is stripped again after the inner client's own transforms.
  const passThrough = (
    strip: ((request: HttpClientRequest.HttpClientRequest) => HttpClientRequest.HttpClientRequest) | undefined,
    request: HttpClientRequest.HttpClientRequest
  ) => executeApplied(strip === undefined ? inner : HttpClient.mapRequest(inner, strip), request, strip)
  const wrapped = HttpClient.makeWith<never, never, E | HttpClientError.HttpClientError | RetryError, R>(
    (request) =>
      // Requests made while this one is prepared (a transform fetching a token through this
      // client) are not under the caller's policy: each gets its own.
      Effect.flatMap(unmarked(request), (request) =>
        Effect.withFiber((fiber) =>
          // Under `Http.*` or a batch, which apply the policy (and check the status) themselves.
          fiber.getRef(PolicyApplied)
            ? passThrough(fiber.getRef(HopStrip), request)
            : Effect.flatMap(RetryPolicy, (policy) =>
                Effect.catchIf(
                  run(policy, request, attempt(policy, request)),
                  (error) => retried.has(error as object),
                  (error) =>
                    Effect.succeed(
                      ((error as HttpClientError.HttpClientError).reason as HttpClientError.StatusCodeError).response
                    )
                )
              )
        )
      ),
    Effect.succeed as HttpClient.HttpClient.Preprocess<never, never>
  )
  // `Http.*` and batches find the inner client here and apply the policy once, themselves.
  return Object.assign(wrapped, { [WrappedKey]: inner })
}

// The failures `withPolicy` makes of responses it may retry, to hand the response back at the end.
const retried = new WeakSet<object>()
const retryable = (response: HttpClientResponse.HttpClientResponse): HttpClientError.HttpClientError => {
  const error = new HttpClientError.HttpClientError({
    reason: new HttpClientError.StatusCodeError({ request: response.request, response })
  })
  retried.add(error)
  return error
}

/**
 * A layer that wraps the environment's `HttpClient` with {@link withPolicy}, so that code using
 * Effect's `HttpClient` directly gets the same retries as `Http.*` and `Fanout` (which see
 * through it and never retry twice). The policy is read where a request runs, not where the
 * layer is built: a `Retry.layer` given to this layer with `Layer.provide` is not seen by the
 * program; provide it to the program (or with `Layer.provideMerge`).
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
