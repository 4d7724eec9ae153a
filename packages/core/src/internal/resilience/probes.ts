// Resilience's circuit breaker, half-open: requests its probe leaves out wait for it.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"
import { offTheClock } from "../retry/loop.ts"

// A half-open circuit admits one request, its probe, and refuses the others with `CircuitHalfOpen`
// while the probe runs: a batch sent as an origin came back failed every item but one. Those wait
// for the probe's end instead, then go through the circuit again: closed, they are sent; open
// again, refused as open. Woken by the end of any request the circuit admitted to their origin
// (the probe's, or one admitted before it opened); not by a refusal. The wait is off the
// attempt's clock where a rate limit provides one; without, the probe, sent first, is cut by
// `attemptTimeout` first, which wakes them.
export const waitingForProbes = (
  client: HttpClient.HttpClient.With<unknown>,
  breaker: CircuitBreaker.CircuitBreaker,
  keyOf: (request: HttpClientRequest.HttpClientRequest) => string
): HttpClient.HttpClient.With<unknown> => {
  const waiting = new Map<string, Set<() => void>>()
  const wake = (key: string): void => {
    const waiters = waiting.get(key)
    if (waiters === undefined) return
    waiting.delete(key)
    for (const waiter of waiters) waiter()
  }
  const probeEnd = (key: string): Effect.Effect<void, CircuitBreaker.CircuitBreakerError> =>
    Effect.suspend(() => {
      // Listening before the state is read: a probe that ends in between still wakes it.
      let woken = false
      let resume: (() => void) | undefined
      const waiter = () => {
        woken = true
        resume?.()
      }
      const waiters = waiting.get(key) ?? new Set<() => void>()
      waiting.set(key, waiters)
      waiters.add(waiter)
      const leave = Effect.sync(() => {
        waiters.delete(waiter)
        if (waiters.size === 0 && waiting.get(key) === waiters) waiting.delete(key)
      })
      return Effect.flatMap(breaker.state(key), (state) =>
        woken || state._tag !== "HalfOpen" || !state.probing
          ? leave
          : Effect.callback<void>((done) => {
              if (woken) return done(Effect.void)
              resume = () => done(Effect.void)
              return leave
            })
      )
    })
  return HttpClient.transform(client, (effect, request) => {
    const key = keyOf(request)
    const admitted = Effect.onExit(effect, (exit) =>
      Exit.isFailure(exit) && Cause.squash(exit.cause) instanceof CircuitBreaker.CircuitBreakerError
        ? Effect.void
        : Effect.sync(() => wake(key))
    )
    const attempt: typeof admitted = Effect.catchIf(admitted, isHalfOpenRefusal, () =>
      Effect.andThen(offTheClock(probeEnd(key)), attempt)
    )
    return attempt
  })
}

const isHalfOpenRefusal = (error: unknown): error is CircuitBreaker.CircuitBreakerError =>
  error instanceof CircuitBreaker.CircuitBreakerError && error.reason._tag === "CircuitHalfOpen"
