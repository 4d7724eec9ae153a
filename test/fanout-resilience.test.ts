// Resilience layers (circuit breaker, rate limiter, Config) around @volley/node's client, under
// fan-out batches, against the fault server. Open durations and rate windows run on TestClock.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Resilience, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, ConfigProvider, Deferred, Effect, Exit, Fiber, Layer, Result } from "effect"
import { TestClock } from "effect/testing"
import { faultServer } from "./support/faultServer.ts"

const reasonOf = <A, E>(result: Result.Result<A, E> | undefined) => {
  if (result === undefined || Result.isSuccess(result)) return { tag: "ok", cause: undefined }
  const failure = result.failure as { reason: { _tag: string; cause?: { _tag?: string } } }
  return { tag: failure.reason._tag, cause: failure.reason.cause?._tag }
}

const resilient = (options: Resilience.Options) =>
  Layer.merge(Resilience.layer(options), Retry.layer({ retries: 0 })).pipe(Layer.provide(NodeHttpClient.layer()))

describe("Resilience", () => {
  describe("layer", () => {
    it.effect("opens the circuit after consecutive failures and rejects without reaching the server", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const urls = Array.from({ length: 6 }, () => `${server.url}/status?code=503`)
        const results = yield* Fanout.allSettled(urls, { concurrency: 1 })
        assert.strictEqual(server.requests(), 2)
        assert.deepStrictEqual(results.map(reasonOf).slice(0, 3), [
          { tag: "StatusCodeError", cause: undefined },
          { tag: "StatusCodeError", cause: undefined },
          { tag: "TransportError", cause: "CircuitBreakerError" }
        ])
        // After the open duration one probe goes through; it succeeds and closes the circuit.
        yield* TestClock.adjust("30 seconds")
        const after = yield* Fanout.allSettled([`${server.url}/ok`, `${server.url}/ok`], { concurrency: 1 })
        assert.isTrue(after.every(Result.isSuccess))
        assert.strictEqual(server.requests(), 4)
      }).pipe(Effect.scoped, Effect.provide(resilient({ circuitBreaker: { failures: 2, openDuration: "30 seconds" } })))
    )

    // Found by review: after the open duration one probe went through and the batch's other items
    // were refused at once as half-open (never retried): 9 of 10 failed against a healthy origin.
    it.effect("sends a batch's items after the probe that closed the circuit, rather than refusing them", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        yield* Fanout.allSettled([`${server.url}/status?code=503`])
        yield* TestClock.adjust("30 seconds")
        // The probe's answer takes 300 ms of real time: the other nine come while it runs.
        const urls = Array.from({ length: 10 }, (_, i) => `${server.url}/ok?delay=${i === 0 ? 300 : 0}&n=${i}`)
        const results = yield* Fanout.allSettled(urls, { concurrency: 10 })
        assert.deepStrictEqual(
          results.map(reasonOf).map((reason) => reason.tag),
          Array(10).fill("ok")
        )
        assert.strictEqual(server.requests(), 11)
      }).pipe(Effect.scoped, Effect.provide(resilient({ circuitBreaker: { failures: 1, openDuration: "30 seconds" } })))
    )

    it.effect("never retries a request the open circuit rejected", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const retried = yield* Deferred.make<void>()
        const fiber = yield* Fanout.allSettled(
          Array.from({ length: 3 }, () => `${server.url}/status?code=500`),
          { concurrency: 1, onProgress: (p) => p.retried > 0 && Deferred.doneUnsafe(retried, Exit.void) }
        ).pipe(Effect.forkChild)
        yield* Deferred.await(retried)
        yield* Effect.yieldNow
        yield* TestClock.adjust("100 millis") // the first backoff: the retry meets the open circuit
        const results = yield* Fiber.join(fiber)
        // First request: a 500, retried once into the open circuit, which is not retried again;
        // the others are rejected at once.
        assert.deepStrictEqual(
          results.map((r) => reasonOf(r).cause),
          ["CircuitBreakerError", "CircuitBreakerError", "CircuitBreakerError"]
        )
        assert.strictEqual(server.requests(), 1)
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Resilience.layer({ circuitBreaker: { failures: 1 }, retry: { retries: 3, jitter: false } }).pipe(
            Layer.provide(NodeHttpClient.layer())
          )
        )
      )
    )

    it.effect("spaces requests with a token-bucket rate limit per host", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const urls = Array.from({ length: 5 }, (_, i) => `${server.url}/index?i=${i}`)
        const fiber = yield* Fanout.all(urls, { concurrency: 5 }).pipe(Effect.forkChild)
        yield* Effect.promise(() => server.receivedRequests(2))
        yield* Effect.promise(() => new Promise((r) => setTimeout(r, 50)))
        assert.strictEqual(server.requests(), 2) // the bucket holds 2 tokens
        yield* TestClock.adjust("500 millis") // one token per 500 ms
        yield* Effect.promise(() => server.receivedRequests(3))
        yield* TestClock.adjust("1 second")
        assert.strictEqual((yield* Fiber.join(fiber)).length, 5)
        assert.strictEqual(server.requests(), 5)
      }).pipe(Effect.scoped, Effect.provide(resilient({ rateLimit: { limit: 2, window: "1 second" } })))
    )

    it.effect("rejects bad options when the layer is built", () =>
      Effect.gen(function* () {
        const cases: ReadonlyArray<readonly [Resilience.Options, string]> = [
          [{ rateLimit: { limit: 0, window: "1 second" } }, "rateLimit.limit"],
          [{ rateLimit: { limit: 5, window: 0 } }, "rateLimit.window"],
          // From JavaScript, a config file or a cast: not one of the two algorithms.
          [
            { rateLimit: { limit: 5, window: "1 second", algorithm: "bogus" as "fixed-window" } },
            "rateLimit.algorithm"
          ],
          [{ rateLimit: { limit: 5, window: "1 second", perHost: "no" as unknown as boolean } }, "rateLimit.perHost"],
          [{ circuitBreaker: { failures: 1.5 } }, "circuitBreaker.failures"],
          [{ circuitBreaker: { openDuration: -1 } }, "circuitBreaker.openDuration"],
          [{ retry: { retries: -1 } }, "retries"]
        ]
        for (const [options, option] of cases) {
          const exit = yield* Effect.exit(Layer.build(resilient(options)).pipe(Effect.scoped))
          const error = Exit.isFailure(exit) ? (Cause.squash(exit.cause) as { option?: string }) : undefined
          assert.strictEqual(error?.option, option)
        }
      })
    )
  })

  describe("layerConfig", () => {
    it.effect("reads the breaker and the retry policy from the environment", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const results = yield* Fanout.allSettled(
          Array.from({ length: 3 }, () => `${server.url}/status?code=502`),
          { concurrency: 1 }
        )
        assert.strictEqual(server.requests(), 1) // no retries, breaker open after one failure
        assert.strictEqual(reasonOf(results[2]).cause, "CircuitBreakerError")
      }).pipe(
        Effect.scoped,
        Effect.provide(Resilience.layerConfig().pipe(Layer.provide(NodeHttpClient.layer()))),
        Effect.provide(
          ConfigProvider.layer(
            ConfigProvider.fromEnv({
              env: { VOLLEY_HTTP_BREAKER_FAILURES: "1", VOLLEY_RETRY_RETRIES: "0" }
            })
          )
        )
      )
    )

    it.effect("fails when only half of the rate limit is configured", () =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(
          Layer.build(Resilience.layerConfig().pipe(Layer.provide(NodeHttpClient.layer()))).pipe(
            Effect.scoped,
            Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { VOLLEY_HTTP_RATE_LIMIT: "5" } })))
          )
        )
        const error = Exit.isFailure(exit) ? (Cause.squash(exit.cause) as Error) : undefined
        assert.strictEqual(
          error?.message,
          "Invalid option VOLLEY_HTTP_RATE_LIMIT: must be set together with VOLLEY_HTTP_RATE_WINDOW"
        )
      })
    )
  })

  describe("Retry.layerClient", () => {
    it.live("reads and drops a retried response's body, so the retry can reuse the only connection", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        // A 1 MiB 503 body left unread would hold the single connection (paused at the
        // client's buffer limit) and the retry would wait for it forever.
        const text = yield* Http.getText(`${server.url}/flaky?key=drain&fail=1&size=1048576`).pipe(
          Effect.timeout("5 seconds")
        )
        assert.strictEqual(text, "ok")
        assert.strictEqual(server.requests(), 2)
        assert.strictEqual(server.openSockets(), 1)
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Layer.merge(Retry.layerClient, Retry.layer({ retries: 1, baseDelay: "1 millis" })).pipe(
            Layer.provide(NodeHttpClient.layer({ connectionsPerOrigin: 1 }))
          )
        )
      )
    )
  })
})
