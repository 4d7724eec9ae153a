// A retry interrupted while it waits (its backoff) is never sent: it must not keep a budget slot
// or count in `volley_http_retries_total` ("requests sent again"). Each case counted it before.
// (A batch's `retried` progress counts retries as they are decided: it is not taken back.)
// TestClock and in-memory clients.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Metric } from "effect"
import { HttpClient, HttpClientRequest, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { Fanout, Http, Retry } from "../src/index.ts"

/** A client answering by path (`replies[path]`, the last repeating); counts calls per path. */
const routed = (replies: Record<string, ReadonlyArray<number>>) => {
  const calls: Record<string, number> = {}
  const client = HttpClient.make((request) =>
    Effect.sync(() => {
      const path = new URL(request.url).pathname
      const n = calls[path] ?? 0
      calls[path] = n + 1
      const list = replies[path] ?? [404]
      return HttpClientResponse.fromWeb(request, new Response(path, { status: list[Math.min(n, list.length - 1)]! }))
    })
  )
  return { client, calls }
}

const retriesOf = (origin: string) =>
  Effect.map(Metric.value(Metric.withAttributes(Http.metrics.retries, { origin })), (s) => Number(s.count))

const OneSecond = Retry.layer({ jitter: false, baseDelay: "1 second", budget: false })

describe("Retry interrupted during a backoff", () => {
  it.effect("gives its budget slot back: a later request may still retry", () =>
    Effect.gen(function* () {
      // ratio 0 and 0.1/s over 10 s: the whole window allows exactly one retry.
      const policy = yield* Retry.make({
        jitter: false,
        baseDelay: "1 second",
        budget: { ratio: 0, minPerSecond: 0.1, window: "10 seconds" }
      })
      const { client, calls } = routed({ "/a": [503], "/b": [503, 200] })
      const get = (path: string) => {
        const request = HttpClientRequest.get(`http://budget.test${path}`)
        return Retry.run(
          policy,
          request,
          Effect.flatMap(HttpClient.filterStatusOk(client).execute(request), (r) => r.text)
        )
      }
      const a = yield* Effect.forkChild(get("/a"))
      yield* TestClock.adjust("500 millis")
      yield* Fiber.interrupt(a)
      assert.strictEqual(calls["/a"], 1)
      const b = yield* Effect.forkChild(Effect.exit(get("/b")))
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(b)
      assert.strictEqual(calls["/b"], 2, "the retry the window allows went to /b")
    })
  )

  it.effect("is not counted as a retry by Http.*", () =>
    Effect.gen(function* () {
      const origin = "http://metric-http.test"
      const { client, calls } = routed({ "/x": [503] })
      const before = yield* retriesOf(origin)
      const fiber = yield* Effect.forkChild(
        Http.getText(`${origin}/x`).pipe(Effect.provideService(HttpClient.HttpClient, client))
      )
      yield* TestClock.adjust("500 millis")
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(calls["/x"], 1)
      assert.strictEqual((yield* retriesOf(origin)) - before, 0)
    }).pipe(Effect.provide(OneSecond))
  )

  it.effect("is not counted as a retry by a fail-fast batch that ended during the wait", () =>
    Effect.gen(function* () {
      const origin = "http://metric-fanout.test"
      const { client, calls } = routed({ "/busy": [503], "/slow-404": [404] })
      // /slow-404 answers after 100 ms, while /busy waits out its 1 s backoff: the batch ends then.
      const slow = HttpClient.make((request) =>
        new URL(request.url).pathname === "/slow-404"
          ? Effect.andThen(Effect.sleep("100 millis"), client.execute(request))
          : client.execute(request)
      )
      const before = yield* retriesOf(origin)
      const fiber = yield* Effect.forkChild(
        Effect.exit(
          Fanout.all([`${origin}/busy`, `${origin}/slow-404`]).pipe(Effect.provideService(HttpClient.HttpClient, slow))
        )
      )
      yield* TestClock.adjust("200 millis")
      yield* Fiber.join(fiber)
      assert.strictEqual(calls["/busy"], 1)
      assert.strictEqual((yield* retriesOf(origin)) - before, 0)
    }).pipe(Effect.provide(OneSecond))
  )
})
