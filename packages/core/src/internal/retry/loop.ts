// The retry loop behind `Retry.run` and `Retry.afterFailure`: attempts, per-attempt and total
// timeouts, backoff with full jitter, Retry-After within cap and deadline, and the budget.

import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Headers from "effect/http/Headers"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Random from "effect/Random"
import * as Result from "effect/Result"
// Only used when a request runs (never while modules load), so the import cycle is harmless.
import {
  DeadlineExceeded,
  isRetryable,
  type Policy,
  RetryAfterTooLong,
  type RetryError,
  type RunOptions
} from "../../Retry.ts"
import { isReplayable } from "./replay.ts"

// Attempts, timeouts and waits of one request, for a fixed absolute deadline.
export const retryLoop = <A, E, R>(
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options: RunOptions | undefined,
  fiber: Fiber.Fiber<unknown, unknown>,
  deadline: number
) => {
  const retrying = policy.retries > 0 && policy.methods.has(request.method) && isReplayable(request)
  const clock = fiber.getRef(Clock.Clock)
  const once = (now: number): Effect.Effect<A, E | RetryError, R> => {
    const left = deadline - now
    if (left <= 0) return Effect.fail(new DeadlineExceeded({ method: request.method, url: request.url }))
    const perAttempt = policy.attemptTimeoutMillis
    if (perAttempt !== undefined && perAttempt < left) return Effect.timeout(attempt, perAttempt)
    if (left === Number.POSITIVE_INFINITY) return attempt
    return Effect.timeoutOrElse(attempt, {
      duration: left,
      orElse: () => Effect.fail(new DeadlineExceeded({ method: request.method, url: request.url }))
    })
  }
  const loop = (n: number, now: number): Effect.Effect<A, E | RetryError, R> =>
    retrying && n < policy.retries ? Effect.catch(once(now), (error) => onFailure(error, n)) : once(now)
  const onFailure = (error: E | RetryError, n: number): Effect.Effect<A, E | RetryError, R> => {
    if (!isRetryable(policy, error)) return Effect.fail(error)
    const now = clock.currentTimeMillisUnsafe()
    const retryAfter = retryAfterMillis(error, now)
    if (retryAfter !== undefined) {
      const limit =
        // `>=`: a retry due exactly at the deadline could not run either.
        retryAfter > policy.maxRetryAfterMillis ? "cap" : now + retryAfter >= deadline ? "deadline" : undefined
      if (limit !== undefined) {
        return Effect.fail(
          new RetryAfterTooLong({
            method: request.method,
            url: request.url,
            retryAfterMillis: retryAfter,
            limitMillis: limit === "cap" ? policy.maxRetryAfterMillis : Math.max(0, deadline - now),
            limit,
            cause: error as HttpClientError.HttpClientError
          })
        )
      }
    }
    const ceiling = Math.min(policy.maxDelayMillis, policy.baseDelayMillis * 2 ** n)
    const backoff = policy.jitter ? fiber.getRef(Random.Random).nextDoubleUnsafe() * ceiling : ceiling
    const delay = Math.max(backoff, retryAfter ?? 0)
    // Waiting would end past the deadline: fail now with the real reason.
    if (now + delay >= deadline) return Effect.fail(error)
    if (policy.budget !== undefined && !policy.budget.tryRetry(now)) return Effect.fail(error)
    options?.onRetry?.()
    // The drain may take until the retry would have to start, never longer.
    return Effect.flatMap(Effect.andThen(discardBody(error, deadline - now - delay), Effect.sleep(delay)), () =>
      loop(n + 1, clock.currentTimeMillisUnsafe())
    )
  }
  return { loop, onFailure }
}

// A response about to be retried is dropped: read its body to the end first, or it holds its
// connection (the retry may need that very one) until garbage collection. A batch has done
// this already, and reading a consumed body again fails or returns it cached: ignored. A body
// still arriving after `withinMillis` is abandoned (interrupting the read aborts it), so an
// endless error body cannot hold the request past its deadline.
const discardBody = (error: unknown, withinMillis: number): Effect.Effect<void> => {
  if (!HttpClientError.isHttpClientError(error) || error.reason._tag !== "StatusCodeError") return Effect.void
  const drain = Effect.ignore(error.reason.response.arrayBuffer)
  return withinMillis === Number.POSITIVE_INFINITY ? drain : Effect.asVoid(Effect.timeoutOption(drain, withinMillis))
}

const retryAfterMillis = (error: unknown, now: number): number | undefined => {
  if (!HttpClientError.isHttpClientError(error) || error.reason._tag !== "StatusCodeError") return undefined
  const header = error.reason.response.headers["retry-after"]
  if (header === undefined) return undefined
  const parsed = Headers.parseRetryAfter(header)
  return Result.isSuccess(parsed) ? Duration.toMillis(Headers.retryAfterDelay(parsed.success, now)) : undefined
}
