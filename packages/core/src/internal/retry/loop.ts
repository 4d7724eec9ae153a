// Running a request under a retry policy (`Retry.run`, `Retry.afterFailure`, re-exported by
// Retry.ts): attempts, per-attempt and total timeouts, backoff with full jitter, Retry-After
// within cap and deadline, and the budget.

import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Headers from "effect/http/Headers"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Metric from "effect/Metric"
import * as Random from "effect/Random"
import * as Result from "effect/Result"
import * as Exchange from "../http/exchange.ts"
import * as Metrics from "../http/metrics.ts"
import { redactUrl } from "../url.ts"
import type { Budget } from "./budget.ts"
import { DeadlineExceeded, RetryAfterTooLong, type RetryError } from "./errors.ts"
import { isRetryable, markFinal, markFinalUnsafe, type Policy, type RunOptions } from "./policy.ts"
import { isReplayable } from "./replay.ts"
import { isUnsent } from "./unsent.ts"

/**
 * Runs `attempt` (one try of `request`, including reading its body) under `policy`: per-attempt
 * and total timeouts, retries of retryable failures with backoff, `Retry-After`, the deadline
 * and the retry budget. The building block of fan-out batches and `Retry.withPolicy`.
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
  // Nothing to time and no budget: nothing costs until an attempt fails, and no fiber is needed.
  if (!isTimed(policy, options) && policy.budget === undefined) return final(bare(policy, request, attempt, options))
  return Effect.withFiber((fiber) => runOn(fiber, policy, request, attempt, options))
}

/**
 * {@link run} on the fiber that runs it, for callers that already hold it (`Http.*`): the same
 * effect without a step to find the fiber.
 */
export const runOn = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options?: RunOptions,
  // The fiber's, when the caller already holds it.
  clock: Clock.Clock = fiber.getRef(Clock.Clock)
): Effect.Effect<A, E | RetryError, R> => {
  const budget = policy.budget
  if (budget === undefined || isTimed(policy, options)) return final(loopOn(fiber, policy, request, attempt, options))
  // The default policy (a budget, nothing to time), as `Http.*` run it per request: one handler,
  // run only when the attempt fails, takes back a request that was never sent, retries,
  // and marks what it gives up on as final (`afterFailure` marks its own).
  const start = clock.currentTimeMillisUnsafe()
  budget.request(start)
  return Effect.catch(attempt, (error) => {
    if (isUnsent(error)) budget.unrequest(start)
    else if (retrying(policy, request)) return afterFailure(policy, request, attempt, error, options)
    markFinalUnsafe(error)
    return Effect.fail(error)
  })
}

// What a loop gives up on is final: a loop around it (whose `read` made this request) must not
// send its own request again for it.
const final = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.tapError(effect, markFinal)

const loopOn = <A, E, R>(
  fiber: Fiber.Fiber<unknown, unknown>,
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options: RunOptions | undefined
): Effect.Effect<A, E | RetryError, R> => {
  // Nothing to time and no budget (`runOn` runs the untimed case with one): nothing costs until
  // an attempt fails.
  if (!isTimed(policy, options)) return bare(policy, request, attempt, options)
  const budget = policy.budget
  // Every request counts in the budget, retried method or not: it caps retries at a fraction
  // of all recent requests. Counted when it runs, not when it is built (a `run` effect may run
  // many times), and taken back if it was never sent (`isUnsent`).
  const start = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
  budget?.request(start)
  let deadline = options?.deadline ?? Number.POSITIVE_INFINITY
  if (policy.timeoutMillis !== undefined) deadline = Math.min(deadline, start + policy.timeoutMillis)
  if (budget === undefined)
    return deadlined(retryLoop(policy, request, attempt, options, fiber, deadline).loop(0, start), deadline)
  // A retry refused by the client's own circuit (opened by the attempt before it) ends a request
  // that was sent: only a refusal of the first attempt leaves the budget.
  let retried = false
  const counting: RunOptions = {
    ...options,
    onRetry: () => {
      retried = true
      options?.onRetry?.()
    }
  }
  const looped = retryLoop(policy, request, attempt, counting, fiber, deadline).loop(0, start)
  return Effect.catch(deadlined(looped, deadline), (error) =>
    retried ? Effect.fail(error) : uncount(budget, start, error)
  )
}

// Redirect hops, run inside `attempt`, keep to the request's deadline.
const deadlined = <A, E, R>(looped: Effect.Effect<A, E, R>, deadline: number): Effect.Effect<A, E, R> =>
  deadline === Number.POSITIVE_INFINITY ? looped : Effect.provideService(looped, CurrentDeadline, deadline)

// The attempt alone, handed to `afterFailure` only if it fails and may be retried.
const bare = <A, E, R>(
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options: RunOptions | undefined
): Effect.Effect<A, E | RetryError, R> =>
  retrying(policy, request)
    ? Effect.catch(attempt, (error) => afterFailure(policy, request, attempt, error, options))
    : attempt

// A method the policy retries, or one carrying an `Idempotency-Key`: the server deduplicates it
// (the IETF httpapi draft; Stripe's and PayPal's APIs), so a POST or PATCH sent again is safe.
const retrying = (policy: Policy, request: HttpClientRequest.HttpClientRequest): boolean =>
  policy.retries > 0 &&
  (policy.methods.has(request.method) || request.headers["idempotency-key"] !== undefined) &&
  isReplayable(request)

const isTimed = (policy: Policy, options: RunOptions | undefined): boolean =>
  options?.deadline !== undefined || policy.timeoutMillis !== undefined || policy.attemptTimeoutMillis !== undefined

// A request that failed without being sent leaves the budget as if never made.
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
 * the first attempt failed without being sent (`InvalidUrlError`, `EncodeError`, a refusal of
 * the client's own circuit breaker or rate limiter).
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
  final(
    retrying(policy, request) && isRetryable(policy, error)
      ? Effect.withFiber((fiber) =>
          retryLoop(policy, request, attempt, options, fiber, options?.deadline ?? Number.POSITIVE_INFINITY).onFailure(
            error,
            0
          )
        )
      : Effect.fail(error)
  )

/**
 * The absolute deadline (`Clock` ms) of the request running on this fiber, when it has one (a
 * batch `deadline`, the policy's `timeout`): its redirect hops run under it too.
 */
export const CurrentDeadline = Context.Reference<number>("@volley/core/Retry/CurrentDeadline", {
  defaultValue: () => Number.POSITIVE_INFINITY
})

/**
 * The clock of the attempt running on this fiber, when volley may make attempts wait before they
 * are sent: Resilience's rate limit and a batch's per-host limits set it ({@link UNTIMED}), and
 * each attempt timed by `attemptTimeout` under them replaces it with its own. A wait run through
 * {@link offTheClock} stops the clocks of every attempt around it, so `attemptTimeout` counts
 * from when the attempt may go, not the time it queued. A redirect hop's retries, run inside
 * such an attempt, keep to the time it has left ({@link AttemptTime.remaining}). Unset (the
 * default), attempts run under a plain `Effect.timeout`: nothing per request for callers with no
 * such wait.
 */
export const AttemptClock = Context.Reference<AttemptTime | undefined>("@volley/core/Retry/AttemptClock", {
  defaultValue: () => undefined
})

/**
 * The active time of one attempt: it does not run while a wait in volley holds the attempt. Times
 * are monotonic ms ({@link monotonicMillis}): a step of the wall clock (NTP) neither stretches nor
 * cuts an attempt short.
 */
export class AttemptTime {
  /** The clock of the attempt this one runs inside (a redirect hop's request), if any. */
  readonly parent: AttemptTime | undefined
  /** Active time (ms) the attempt may run: its `attemptTimeout`. */
  readonly millis: number
  /** Waits holding the attempt now. */
  private waits = 0
  /** Active time (ms) before `since`. */
  private used = 0
  /** When the clock last started running. */
  private since: number
  /** Resumes the attempt's timer, parked while the clock is stopped. */
  wake: (() => void) | undefined = undefined
  constructor(parent: AttemptTime | undefined, millis: number, now: number) {
    this.parent = parent
    this.millis = millis
    this.since = now
  }
  get stopped(): boolean {
    return this.waits > 0
  }
  /** Active time (ms) at `now`. */
  elapsed(now: number): number {
    return this.waits > 0 ? this.used : this.used + now - this.since
  }
  /**
   * Active time (ms) left at `now` before this attempt or one around it times out: a wait on the
   * clock longer than that would be cut short. Waits off the clock leave it as it is.
   */
  remaining(now: number): number {
    let left = Number.POSITIVE_INFINITY
    for (let time: AttemptTime | undefined = this; time !== undefined; time = time.parent) {
      left = Math.min(left, time.millis - time.elapsed(now))
    }
    return left
  }
  /** A wait starts: this clock and those of the attempts around it stop. */
  hold(now: number): void {
    for (let time: AttemptTime | undefined = this; time !== undefined; time = time.parent) {
      if (time.waits++ === 0) time.used += now - time.since
    }
  }
  /** The wait ended: the clocks it stopped run again (unless another wait still holds one). */
  release(now: number): void {
    for (let time: AttemptTime | undefined = this; time !== undefined; time = time.parent) {
      if (--time.waits > 0) continue
      time.since = now
      const wake = time.wake
      time.wake = undefined
      wake?.()
    }
  }
}

/**
 * {@link RunOptions} of a redirect hop made inside an attempt timed on its clock: that attempt's
 * end is unknown in advance, so the hop cannot have it as its `deadline`; a retry of the hop
 * instead never waits past the time the attempt has left as the hop fails (as a hop in a plain
 * timed attempt keeps to that attempt's end), and a wait longer than that (a `Retry-After`)
 * fails at once.
 */
export interface HopRunOptions extends RunOptions {
  /** The clock of the attempt the hop continues. */
  readonly within?: AttemptTime | undefined
  /**
   * The hop runs inside an attempt whose own timers end it at `deadline` (its `attemptTimeout`:
   * a `TimeoutError` that attempt retries; the request's deadline: `DeadlineExceeded`). The hop
   * then keeps to `deadline` in its waits but puts no timer of its own on it: due at the same
   * moment, it would race the attempt's and could end the request with a final error instead.
   */
  readonly enclosed?: boolean | undefined
}

/**
 * How a retry on `fiber` waits out a `Retry-After` of `retryAfterMillis` and its own delay of
 * `delayMillis`, at most until `until` (`Clock` ms, the request's deadline). Called as the retry
 * is decided: a batch pauses the origin that asked at once, and a worker's item waits without
 * its slot (see `Fanout`).
 */
export type WaitForRetryAfter = (
  fiber: Fiber.Fiber<unknown, unknown>,
  url: string,
  retryAfterMillis: number,
  delayMillis: number,
  until: number
) => Effect.Effect<void>

/** Set by a batch (see {@link WaitForRetryAfter}); unset (`Http.*` alone): a sleep of the delay. */
export const RetryAfterWait = Context.Reference<WaitForRetryAfter | undefined>("@volley/core/Retry/RetryAfterWait", {
  defaultValue: () => undefined
})

/** {@link AttemptClock} where attempts may wait but none runs yet: it stops nothing. */
export const UNTIMED = new AttemptTime(undefined, Number.POSITIVE_INFINITY, 0)

/** `clock`'s monotonic time in ms: what {@link AttemptTime} measures with. */
export const monotonicMillis = (clock: Clock.Clock): number => Number(clock.monotonicTimeNanosUnsafe()) / 1_000_000

/**
 * Whether the request running on `fiber` has used up the time volley gives it: its attempt's
 * `attemptTimeout`, its policy's `timeout`, or its batch's `deadline`. For a client whose request
 * is interrupted, to tell a cut by one of these from any other interrupt (volley's client spans
 * then say `error.type: "timeout"`). An `Effect.timeout` of the caller's own is not seen.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Retry } from "@volley/core"
 *
 * declare const attempt: Effect.Effect<string>
 * const watched = attempt.pipe(
 *   Effect.onInterrupt(() =>
 *     Effect.withFiber((fiber) => Effect.log(Retry.isOutOfTime(fiber) ? "timed out" : "interrupted"))
 *   )
 * )
 * ```
 *
 * @since 0.1.0
 * @category timeouts
 */
export const isOutOfTime = (fiber: Fiber.Fiber<unknown, unknown>): boolean => {
  const clock = fiber.getRef(Clock.Clock)
  const time = fiber.getRef(AttemptClock)
  // Its timer measures on this clock, and ends the attempt once none is left.
  if (time !== undefined && time.remaining(monotonicMillis(clock)) <= 0) return true
  // The deadline is on the wall clock; `Effect.timeout`'s timer (the event loop's clock) may end
  // an attempt up to a millisecond before the wall clock reaches it.
  return clock.currentTimeMillisUnsafe() >= fiber.getRef(CurrentDeadline) - 1
}

/**
 * Runs `wait`, a wait in volley's own line before an attempt may go (a rate limit's turn, an
 * origin's pause, a slot at a redirect's origin), off the clock of the attempts around it: their
 * `attemptTimeout` does not count it. The total `timeout` and a batch's `deadline` still do.
 */
export const offTheClock = <A, E, R>(wait: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => {
    const time = fiber.getRef(AttemptClock)
    if (time === undefined || time === UNTIMED) return wait
    const clock = fiber.getRef(Clock.Clock)
    return Effect.uninterruptibleMask((restore) => {
      time.hold(monotonicMillis(clock))
      return Effect.ensuring(
        restore(wait),
        Effect.sync(() => time.release(monotonicMillis(clock)))
      )
    })
  })

// The `TimeoutError` of an attempt cut by `attemptTimeout`: Effect's says only "Operation timed
// out after ...", which leaves a batch's user to guess which request it was.
const attemptTimedOut = (request: HttpClientRequest.HttpClientRequest, millis: number): Cause.TimeoutError =>
  new Cause.TimeoutError(
    `${request.method} ${redactUrl(request.url)} timed out after ${Duration.format(Duration.millis(millis))} (attemptTimeout)`
  )

// `attempt` failing with `TimeoutError` (as `Effect.timeout`'s) once it has been active for
// `millis`, its waits off the clock not counted.
const timedOnClock = <A, E, R>(
  attempt: Effect.Effect<A, E, R>,
  request: HttpClientRequest.HttpClientRequest,
  millis: number,
  outer: AttemptTime,
  clock: Clock.Clock
): Effect.Effect<A, E | Cause.TimeoutError, R> =>
  Effect.suspend(() => {
    const time = new AttemptTime(outer === UNTIMED ? undefined : outer, millis, monotonicMillis(clock))
    const parked = Effect.callback<void>((resume) => {
      if (!time.stopped) return resume(Effect.void)
      time.wake = () => resume(Effect.void)
      return Effect.sync(() => {
        time.wake = undefined
      })
    })
    // Sleeps until the attempt would be due, then looks again: a wait meanwhile moved that on.
    const timer: Effect.Effect<never, Cause.TimeoutError> = Effect.suspend(() => {
      if (time.stopped) return Effect.flatMap(parked, () => timer)
      const left = millis - time.elapsed(monotonicMillis(clock))
      if (left <= 0) {
        return Effect.fail(attemptTimedOut(request, millis))
      }
      return Effect.flatMap(Effect.sleep(left), () => timer)
    })
    return Effect.raceFirst(Effect.provideService(attempt, AttemptClock, time), timer)
  })

// Attempts, timeouts and waits of one request, for a fixed absolute deadline.
export const retryLoop = <A, E, R>(
  policy: Policy,
  request: HttpClientRequest.HttpClientRequest,
  attempt: Effect.Effect<A, E, R>,
  options: RunOptions | undefined,
  fiber: Fiber.Fiber<unknown, unknown>,
  deadline: number
) => {
  const retries = retrying(policy, request)
  const clock = fiber.getRef(Clock.Clock)
  // Set when volley may make an attempt wait before it is sent (see `AttemptClock`).
  const outer = fiber.getRef(AttemptClock)
  // The latest a wait may end, at `now`: the deadline, and for a redirect hop inside an attempt
  // timed on its clock, the time that attempt has left as of now (waits off its clock since it
  // started used none of it), as the plain path gives a hop `now + attemptTimeout` (see `once`).
  const within = (options as HopRunOptions | undefined)?.within
  const enclosed = (options as HopRunOptions | undefined)?.enclosed === true
  const end =
    within === undefined
      ? (_now: number) => deadline
      : (now: number) => Math.min(deadline, now + within.remaining(monotonicMillis(clock)))
  const once = (now: number): Effect.Effect<A, E | RetryError, R> => {
    const left = deadline - now
    // A hop past its enclosing attempt's end is ended by that attempt's timers (see `enclosed`).
    if (left <= 0)
      return enclosed ? attempt : Effect.fail(new DeadlineExceeded({ method: request.method, url: request.url }))
    const perAttempt = policy.attemptTimeoutMillis
    if (perAttempt !== undefined && perAttempt < left) {
      // Redirect hops, run inside the attempt, end with it: their waits never outlast it.
      if (outer === undefined)
        return Effect.timeoutOrElse(Effect.provideService(attempt, CurrentDeadline, now + perAttempt), {
          duration: perAttempt,
          orElse: () => Effect.fail(attemptTimedOut(request, perAttempt))
        })
      // A hop with no less time than its enclosing attempt has left is ended by that attempt.
      if (within !== undefined && perAttempt >= within.remaining(monotonicMillis(clock))) return attempt
      // Waits off the clock make the attempt's end unknown in advance: its hops keep to the
      // request's deadline and to the time it has left when they fail (`HopRunOptions`), and its
      // timer cuts them off as it would the attempt.
      const timed = timedOnClock(attempt, request, perAttempt, outer, clock)
      return left === Number.POSITIVE_INFINITY || enclosed ? timed : untilDeadline(timed, left, request)
    }
    if (left === Number.POSITIVE_INFINITY || enclosed) return attempt
    return untilDeadline(attempt, left, request)
  }
  const loop = (n: number, now: number): Effect.Effect<A, E | RetryError, R> =>
    retries && n < policy.retries ? Effect.catch(once(now), (error) => onFailure(error, n)) : once(now)
  const onFailure = (error: E | RetryError, n: number): Effect.Effect<A, E | RetryError, R> => {
    if (!isRetryable(policy, error)) return Effect.fail(error)
    const now = clock.currentTimeMillisUnsafe()
    const until = end(now)
    const retryAfter = retryAfterMillis(error, now)
    if (retryAfter !== undefined) {
      const limit =
        // `>=`: a retry due exactly at the deadline could not run either.
        retryAfter > policy.maxRetryAfterMillis ? "cap" : now + retryAfter >= until ? "deadline" : undefined
      if (limit !== undefined) {
        // Given up on: its body is read (a small one) or aborted, so it holds no connection.
        return Effect.andThen(
          discardBody(error, Math.max(0, until - now)),
          Effect.fail(
            new RetryAfterTooLong({
              method: request.method,
              url: request.url,
              retryAfterMillis: retryAfter,
              limitMillis: limit === "cap" ? policy.maxRetryAfterMillis : Math.max(0, until - now),
              limit,
              cause: error as HttpClientError.HttpClientError
            })
          )
        )
      }
    }
    const ceiling = Math.min(policy.maxDelayMillis, policy.baseDelayMillis * 2 ** n)
    const spread = policy.jitter ? fiber.getRef(Random.Random).nextDoubleUnsafe() : 1
    // A `Retry-After` is a floor, with the jitter above it: the requests an origin sent away
    // together (a batch's, every 429 saying "5") came back at the same millisecond, to be sent
    // away again; they now spread over the backoff's ceiling after it.
    const delay =
      retryAfter === undefined || retryAfter < ceiling
        ? Math.max(spread * ceiling, retryAfter ?? 0)
        : retryAfter + (policy.jitter ? Math.min(spread * ceiling, Math.max(0, until - now - retryAfter - 1)) : 0)
    // Waiting would end past the deadline: fail now with the real reason.
    if (now + delay >= until) return Effect.fail(error)
    const budget = policy.budget
    if (budget !== undefined && !budget.tryRetry(now)) return Effect.fail(error)
    options?.onRetry?.()
    // A batch waits a `Retry-After` out of the item's slot, its origin paused (see `RetryAfterWait`).
    const waitAfter = retryAfter === undefined ? undefined : fiber.getRef(RetryAfterWait)
    const sleep =
      waitAfter === undefined ? Effect.sleep(delay) : waitAfter(fiber, request.url, retryAfter!, delay, until)
    // The drain may take until the retry would have to start, never longer.
    const wait = Effect.andThen(discardBody(error, until - now - delay), sleep)
    // A retry interrupted while it waits is never sent: it gives its budget slot back, and the
    // metric ("requests sent again") counts it only once the wait is over.
    const waited =
      budget === undefined ? wait : Effect.onInterrupt(wait, () => Effect.sync(() => budget.untryRetry(now)))
    return Effect.flatMap(waited, () => {
      const retry = Effect.andThen(countRetry(request), loop(n + 1, clock.currentTimeMillisUnsafe()))
      // A retry the client's own circuit or rate limiter refused (the circuit opened meanwhile) was
      // never sent either: its slot goes back, or every request in flight to an origin whose
      // circuit opens spends one, starving other origins' retries.
      return budget === undefined ? retry : Effect.tapError(retry, (error) => giveBack(budget, now, error))
    })
  }
  return { loop, onFailure }
}

// Refusals whose retry has given its budget slot back: the loops around it see the same error.
const givenBack = new WeakSet<object>()

// The innermost retry fails first: the refused one, whose slot was taken at `atMillis`.
const giveBack = (budget: Budget, atMillis: number, error: unknown): Effect.Effect<void> =>
  Effect.sync(() => {
    if (!isUnsent(error) || givenBack.has(error as object)) return
    givenBack.add(error as object)
    budget.untryRetry(atMillis)
  })

// `effect`, failing with `DeadlineExceeded` if it runs `left` ms.
const untilDeadline = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  left: number,
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<A, E | DeadlineExceeded, R> =>
  Effect.timeoutOrElse(effect, {
    duration: left,
    orElse: () => Effect.fail(new DeadlineExceeded({ method: request.method, url: request.url }))
  })

// `volley_http_retries_total`, by the origin sent to again (as the client's own metrics name it).
const countRetry = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<void> =>
  Metric.update(Metric.withAttributes(Metrics.retries, { origin: URL.parse(request.url)?.origin ?? request.url }), 1)

// The `Retry-After` of a response, or of a proxy's refusal of CONNECT (a ProxyConnectionError
// carries it, as it carries the status the policy retries it by).
const retryAfterOf = (error: unknown): string | undefined => {
  if (!HttpClientError.isHttpClientError(error)) return undefined
  const reason = error.reason
  if (reason._tag === "StatusCodeError") return reason.response.headers["retry-after"]
  if (reason._tag !== "TransportError" || typeof reason.cause !== "object" || reason.cause === null) return undefined
  const { _tag, retryAfter } = reason.cause as { readonly _tag?: unknown; readonly retryAfter?: unknown }
  return _tag === "ProxyConnectionError" && typeof retryAfter === "string" ? retryAfter : undefined
}

// A response about to be retried is dropped: read its body to the end first, or it holds its
// connection (the retry may need that very one) until garbage collection. A batch has done
// this already, and reading a consumed body again fails or returns it cached: ignored. A body
// still arriving after `withinMillis` is abandoned (interrupting the read aborts it), so an
// endless error body cannot hold the request past its deadline.
const discardBody = (error: unknown, withinMillis: number): Effect.Effect<void> => {
  if (!HttpClientError.isHttpClientError(error) || error.reason._tag !== "StatusCodeError") return Effect.void
  // Capped as `Http.*` caps it: a small announced body is read, any other is aborted.
  const drain = Exchange.drain(error.reason.response)
  return withinMillis === Number.POSITIVE_INFINITY ? drain : Effect.asVoid(Effect.timeoutOption(drain, withinMillis))
}

const retryAfterMillis = (error: unknown, now: number): number | undefined => {
  const header = retryAfterOf(error)
  if (header === undefined) return undefined
  const parsed = Headers.parseRetryAfter(header)
  return Result.isSuccess(parsed) ? Duration.toMillis(Headers.retryAfterDelay(parsed.success, now)) : undefined
}
