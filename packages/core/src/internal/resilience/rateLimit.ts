// Resilience's rate limit: a per-key FIFO line in front of Effect's `RateLimiter`, whose waiters
// hold no token while they wait. `HttpClient.withRateLimiter` consumes with `onExceeded: "delay"`,
// which takes the token up front (the memory store lets the bucket go negative) and then sleeps:
// a request interrupted during that sleep (its caller gave up, or the retry policy's timeout
// ended it) was never sent, yet kept its future slot, and each retry reserved another. Here the head of the line asks for a token with `onExceeded: "fail"`,
// which takes nothing when none is free, and sleeps for the limiter's `retryAfter` between
// asks; the others wait on a semaphore. Leaving the line, at any point, leaves nothing behind.
// The whole turn runs off the attempt's clock (`offTheClock`): `attemptTimeout` times the
// request from when it holds its token, not while it stood in line.
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as RateLimiter from "effect/persistence/RateLimiter"
import * as Semaphore from "effect/Semaphore"
import { offTheClock } from "../retry/loop.ts"

export interface Options<G = never> {
  readonly limiter: RateLimiter.RateLimiter
  /** The line a request joins: its origin, or one key for the whole client. */
  readonly key: (request: HttpClientRequest.HttpClientRequest) => string
  readonly limit: number
  readonly window: Duration.Duration
  readonly algorithm: "fixed-window" | "token-bucket"
  /**
   * Run at the head of the line before each ask for a token: its failure ends the request's turn
   * at once, taking nothing, and the next in line goes on.
   */
  readonly ready?: ((request: HttpClientRequest.HttpClientRequest) => Effect.Effect<void, G>) | undefined
}

/** `client` with each request sent only once it holds a token, requests of a key in arrival order. */
export const withRateLimit = <E, R, G = never>(
  client: HttpClient.HttpClient.With<E, R>,
  options: Options<G>
): HttpClient.HttpClient.With<E | G | RateLimiter.RateLimiterError, R> => {
  // One line per key while it has someone in it (a key's entry goes when its last request
  // leaves, so a client that talks to many origins keeps no state for the idle ones).
  const lines = new Map<string, { readonly semaphore: Semaphore.Semaphore; waiting: number }>()

  const take = (
    key: string,
    request: HttpClientRequest.HttpClientRequest
  ): Effect.Effect<void, G | RateLimiter.RateLimiterError> => {
    const consume: Effect.Effect<void, G | RateLimiter.RateLimiterError> = options.limiter
      .consume({ key, limit: options.limit, window: options.window, algorithm: options.algorithm, onExceeded: "fail" })
      .pipe(
        Effect.asVoid,
        Effect.catchReason("RateLimiterError", "RateLimitExceeded", (exceeded) =>
          // At least a millisecond, so that a zero `retryAfter` cannot spin.
          Effect.flatMap(Effect.sleep(Duration.max(exceeded.retryAfter, Duration.millis(1))), () => ask)
        )
      )
    const ready = options.ready
    const ask = ready === undefined ? consume : Effect.andThen(ready(request), consume)
    return ask
  }

  const turn = (
    key: string,
    request: HttpClientRequest.HttpClientRequest
  ): Effect.Effect<void, G | RateLimiter.RateLimiterError> =>
    Effect.suspend(() => {
      let line = lines.get(key)
      if (line === undefined) {
        line = { semaphore: Semaphore.makeUnsafe(1), waiting: 0 }
        lines.set(key, line)
      }
      const joined = line
      joined.waiting += 1
      return joined.semaphore.withPermit(take(key, request)).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            joined.waiting -= 1
            if (joined.waiting === 0 && lines.get(key) === joined) lines.delete(key)
          })
        )
      )
    })

  return HttpClient.transform(client, (effect, request) =>
    Effect.flatMap(offTheClock(turn(options.key(request), request)), () => effect)
  )
}

/**
 * The clock to build the limiter's memory store with. Its sweep of expired buckets is a fiber
 * that sleeps a minute at a time for the layer's life: on the live clock, each sleep is a timer
 * that keeps the process running, so a program whose runtime is never disposed (a script's
 * `ManagedRuntime`) never exited. On the live clock its sleeps hold the process no more than
 * the client's other timers do; any other clock (`TestClock`, one of the caller's) is kept as
 * it is. The store's own reads of the time use the requesting fiber's clock, not this one.
 */
export const sweepClock = (clock: Clock.Clock): Clock.Clock =>
  clock !== Context.get(Context.empty(), Clock.Clock)
    ? clock
    : {
        currentTimeMillisUnsafe: () => clock.currentTimeMillisUnsafe(),
        currentTimeMillis: clock.currentTimeMillis,
        currentTimeNanosUnsafe: () => clock.currentTimeNanosUnsafe(),
        currentTimeNanos: clock.currentTimeNanos,
        monotonicTimeNanosUnsafe: () => clock.monotonicTimeNanosUnsafe(),
        monotonicTimeNanos: clock.monotonicTimeNanos,
        sleep: (duration) =>
          Effect.callback<void>((resume) => {
            const timer = setTimeout(() => resume(Effect.void), Math.min(Duration.toMillis(duration), MAX_TIMER_MS))
            // Node, Deno and Bun give timers `unref`; elsewhere (a browser) nothing holds a process.
            ;(timer as { unref?: () => void }).unref?.()
            return Effect.sync(() => clearTimeout(timer))
          })
      }

// setTimeout's longest delay; the sweep sleeps a minute.
const MAX_TIMER_MS = 2_147_483_647
