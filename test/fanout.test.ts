// Fan-out batches against a real, misbehaving origin (test/support/faultServer.ts) through
// @volley/node's undici client. Backoff and timeouts run on TestClock: the test waits for the
// batch to report a retry (it is then sleeping on TestClock) and moves the clock.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Fiber, Layer, Queue, Result, Stream } from "effect"
import type { HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { type FaultServer, faultServer } from "./support/faultServer.ts"

const text = (r: HttpClientResponse.HttpClientResponse) => r.text

/** Progress that signals each new retry on a queue, so a test can move TestClock after it. */
const retrySignals = Effect.map(Queue.unbounded<number>(), (queue) => {
  let seen = 0
  const onProgress = (p: Fanout.Progress) => {
    if (p.retried > seen) {
      seen = p.retried
      Queue.offerUnsafe(queue, p.retried)
    }
  }
  // The retry is reported just before its sleep starts: let that fiber get there first.
  const next = Queue.take(queue).pipe(Effect.andThen(Effect.yieldNow), Effect.andThen(Effect.yieldNow))
  return { onProgress, next }
})

const tagOf = <A, E>(result: Result.Result<A, E> | undefined): string => {
  if (result === undefined) return "missing"
  if (Result.isSuccess(result)) return "ok"
  const failure = result.failure as { _tag: string; reason?: { _tag: string } }
  return failure._tag === "HttpClientError" ? failure.reason!._tag : failure._tag
}

const policy = (options: Retry.Options) => Retry.layer({ jitter: false, budget: false, ...options })
const Client = NodeHttpClient.layer()
const withServer = <A, E, R>(f: (server: FaultServer) => Effect.Effect<A, E, R>) =>
  Effect.flatMap(faultServer, f).pipe(Effect.scoped)

describe("Fanout (real server)", () => {
  describe("retries", () => {
    it.effect("retries reset connections with exponential backoff and succeeds", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const signals = yield* retrySignals
          const fiber = yield* Fanout.all([`${server.url}/flaky-reset?key=r&fail=2`], {
            read: text,
            onProgress: signals.onProgress
          }).pipe(Effect.forkChild)
          yield* signals.next
          assert.strictEqual(server.requests("/flaky-reset"), 1)
          yield* TestClock.adjust("99 millis")
          assert.strictEqual(server.requests("/flaky-reset"), 1)
          yield* TestClock.adjust("1 millis")
          yield* signals.next // second failure: now waiting 200 ms
          assert.strictEqual(server.requests("/flaky-reset"), 2)
          yield* TestClock.adjust("200 millis")
          assert.deepStrictEqual(yield* Fiber.join(fiber), ["ok"])
          assert.strictEqual(server.requests("/flaky-reset"), 3)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({ baseDelay: "100 millis" }))))
    )

    it.effect("waits what Retry-After asks (seconds) before retrying a 503", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const signals = yield* retrySignals
          const fiber = yield* Fanout.all([`${server.url}/flaky?key=s&retryAfter=30`], {
            read: text,
            onProgress: signals.onProgress
          }).pipe(Effect.forkChild)
          yield* signals.next
          yield* TestClock.adjust("29999 millis")
          assert.strictEqual(server.requests("/flaky"), 1)
          yield* TestClock.adjust("1 millis")
          assert.deepStrictEqual(yield* Fiber.join(fiber), ["ok"])
          assert.strictEqual(server.requests("/flaky"), 2)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({ baseDelay: "10 millis" }))))
    )

    it.effect("waits until a Retry-After HTTP date before retrying", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const signals = yield* retrySignals
          // TestClock starts at the epoch: this date is 45 s after "now".
          const date = encodeURIComponent(new Date(45_000).toUTCString())
          const fiber = yield* Fanout.all([`${server.url}/flaky?key=d&status=429&retryAfter=${date}`], {
            read: text,
            onProgress: signals.onProgress
          }).pipe(Effect.forkChild)
          yield* signals.next
          yield* TestClock.adjust("44999 millis")
          assert.strictEqual(server.requests("/flaky"), 1)
          yield* TestClock.adjust("1 millis")
          assert.deepStrictEqual(yield* Fiber.join(fiber), ["ok"])
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({ baseDelay: "10 millis" }))))
    )

    it.effect("fails at once with RetryAfterTooLong when Retry-After outlasts the batch deadline", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const results = yield* Fanout.allSettled(
            [`${server.url}/flaky?key=t&retryAfter=30`, `${server.url}/ok`],
            { deadline: "10 seconds" } // never reached: no clock adjustment in this test
          )
          assert.deepStrictEqual(results.map(tagOf), ["RetryAfterTooLong", "ok"])
          const failure = (results[0] as Result.Failure<unknown, Retry.RetryAfterTooLong>).failure
          assert.strictEqual(failure.limit, "deadline")
          assert.strictEqual(failure.retryAfterMillis, 30_000)
          assert.strictEqual(server.requests("/flaky"), 1)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({}))))
    )

    it.effect("does not retry a POST that got a 503", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const { HttpClientRequest } = yield* Effect.promise(() => import("effect/http"))
          const results = yield* Fanout.allSettled([HttpClientRequest.post(`${server.url}/flaky?key=p`)])
          assert.deepStrictEqual(results.map(tagOf), ["StatusCodeError"])
          assert.strictEqual(server.requests("/flaky"), 1)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({}))))
    )

    it.effect("caps the retries of a 429 storm with the retry budget", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const signals = yield* retrySignals
          const urls = Array.from({ length: 100 }, () => `${server.url}/status?code=429&retryAfter=1`)
          const fiber = yield* Fanout.allSettled(urls, { concurrency: 20, onProgress: signals.onProgress }).pipe(
            Effect.forkChild
          )
          // Each round of retries waits Retry-After (1 s); move the clock until the batch ends.
          while (fiber.pollUnsafe() === undefined) {
            yield* Effect.raceFirst(signals.next, Fiber.await(fiber))
            yield* TestClock.adjust("1 second")
          }
          const results = yield* Fiber.join(fiber)
          assert.isTrue(results.every((r) => tagOf(r) === "StatusCodeError"))
          // 10% of 100 requests: 10 retries in all, not 100 x 3
          assert.strictEqual(server.requests("/status"), 110)
        })
      ).pipe(
        Effect.provide(
          Layer.merge(
            Client,
            Retry.layer({ jitter: false, budget: { ratio: 0.1, minPerSecond: 0, window: "1 minute" } })
          )
        )
      )
    )
  })

  describe("timeouts and bodies", () => {
    // With `perHost` too: the attempt is then timed on its own clock (waits for a slot left out).
    for (const perHost of [undefined, 2]) {
      it.effect(
        `times out delayed headers per attempt, retries, then fails with TimeoutError naming the request (perHost ${perHost})`,
        () =>
          withServer((server) =>
            Effect.gen(function* () {
              const signals = yield* retrySignals
              const fiber = yield* Fanout.allSettled([`${server.url}/ok?delay=600000`], {
                onProgress: signals.onProgress,
                perHost
              }).pipe(Effect.forkChild)
              yield* Effect.promise(() => server.receivedRequests(1))
              yield* TestClock.adjust("1 second")
              yield* signals.next
              yield* TestClock.adjust("100 millis")
              yield* Effect.promise(() => server.receivedRequests(2))
              yield* TestClock.adjust("1 second")
              const results = yield* Fiber.join(fiber)
              assert.deepStrictEqual(results.map(tagOf), ["TimeoutError"])
              // Found by review: Effect's message ("Operation timed out after '1s'") named no request.
              const error = (results[0] as Result.Failure<unknown, Error>).failure
              assert.strictEqual(error.message, `GET ${server.url}/ok?delay=600000 timed out after 1s (attemptTimeout)`)
              // Both timed-out attempts closed their sockets.
              yield* Effect.promise(() => server.allSocketsClosed())
            })
          ).pipe(Effect.provide(Layer.merge(Client, policy({ retries: 1, attemptTimeout: "1 second" }))))
      )
    }

    it.effect("reads a slow body to the end", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const bodies = yield* Fanout.all([`${server.url}/slow-body?chunks=5&interval=20`], { read: text })
          assert.deepStrictEqual(bodies, ["xxxxx"])
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({}))))
    )

    it.effect("retries a truncated body, then fails with the client's DecodeError", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const signals = yield* retrySignals
          const fiber = yield* Fanout.allSettled([`${server.url}/truncated`], { onProgress: signals.onProgress }).pipe(
            Effect.forkChild
          )
          yield* signals.next
          yield* TestClock.adjust("100 millis")
          const results = yield* Fiber.join(fiber)
          assert.deepStrictEqual(results.map(tagOf), ["DecodeError"])
          assert.strictEqual(server.requests("/truncated"), 2)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({ retries: 1 }))))
    )

    it.effect("drains error bodies, so one keep-alive connection serves the whole batch", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const urls = Array.from({ length: 10 }, (_, i) =>
            i % 2 === 0 ? `${server.url}/status?code=404&size=200000` : `${server.url}/ok?size=200000`
          )
          const results = yield* Fanout.allSettled(urls, { concurrency: 4 })
          assert.deepStrictEqual(
            results.map(tagOf),
            urls.map((_, i) => (i % 2 === 0 ? "StatusCodeError" : "ok"))
          )
          assert.strictEqual(server.openSockets(), 1)
        })
      ).pipe(Effect.provide(Layer.merge(NodeHttpClient.layer({ connectionsPerOrigin: 1 }), policy({}))))
    )
  })

  describe("bounds and bad input", () => {
    it.effect("keeps a slow host to its per-host limit while a fast host goes on", () =>
      Effect.gen(function* () {
        const slow = yield* faultServer
        const fast = yield* faultServer
        const urls = [
          ...Array.from({ length: 4 }, () => `${slow.url}/ok?delay=300`),
          ...Array.from({ length: 30 }, (_, i) => `${fast.url}/index?i=${i}`)
        ]
        const order = yield* Fanout.streamSettled(urls, { concurrency: 4, perHost: 2 }).pipe(
          Stream.map((item) => (item.index < 4 ? "slow" : "fast")),
          Stream.runCollect
        )
        assert.strictEqual(slow.peakInFlight(), 2)
        assert.isAtMost(fast.peakInFlight(), 2)
        // All 30 fast requests went through while the first slow ones were still waiting.
        assert.deepStrictEqual(
          order.slice(0, 30),
          Array.from({ length: 30 }, () => "fast")
        )
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(Client, policy({}))))
    )

    it.effect("keeps one origin to its per-host limit however its URLs spell it", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const port = new URL(server.url).port
          // Each spelling the URL parser (and undici) resolves to the same origin: a leading zero
          // in the port, a percent-encoded host, IPv4 shorthand, `\` for `/`, a tab.
          const spellings = [
            (i: number) => `${server.url}/ok?delay=40&i=${i}`,
            (i: number) => `http://127.0.0.1:0${port}/ok?delay=40&i=${i}`,
            (i: number) => `http://127.0.0.%31:${port}/ok?delay=40&i=${i}`,
            (i: number) => `http://127.1:${port}/ok?delay=40&i=${i}`,
            (i: number) => `http://127.0.0.1:${port}\\ok?delay=40&i=${i}`,
            (i: number) => `http://127.0.0.1:\t${port}/ok?delay=40&i=${i}`
          ]
          const urls = Array.from({ length: 12 }, (_, i) => spellings[i % spellings.length]!(i))
          const results = yield* Fanout.allSettled(urls, { concurrency: 12, perHost: 1 })
          assert.deepStrictEqual(
            results.map(tagOf),
            urls.map(() => "ok")
          )
          assert.strictEqual(server.requests("/ok"), 12)
          assert.strictEqual(server.peakInFlight(), 1)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({ retries: 0 }))))
    )

    it.effect("gives a malformed URL its own InvalidUrlError and runs the rest", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const results = yield* Fanout.allSettled([
            `${server.url}/ok`,
            "http://exa mple.com:99999/",
            "not a url",
            `${server.url}/ok`
          ])
          assert.deepStrictEqual(results.map(tagOf), ["ok", "InvalidUrlError", "InvalidUrlError", "ok"])
          assert.strictEqual(server.requests(), 2)
        })
      ).pipe(Effect.provide(Layer.merge(Client, policy({}))))
    )

    it.effect("rejects a per-host limit of 0 before sending anything", () =>
      withServer((server) =>
        Effect.gen(function* () {
          const exit = yield* Effect.exit(Fanout.allSettled([`${server.url}/ok`], { perHost: 0 }))
          const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
          assert.strictEqual((error as Error).message, "Invalid option perHost: must be an integer >= 1, got 0")
          assert.strictEqual(server.requests(), 0)
        })
      ).pipe(Effect.provide(Client))
    )
  })
})
