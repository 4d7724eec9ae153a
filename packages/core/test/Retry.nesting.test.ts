// The retry loop where it meets other loops, under TestClock with in-memory clients: wrappers
// stacked under transforms, redirect hops inside a timed attempt, requests a `read` makes of its
// own, an error body that never ends, and the budget when the clock goes back. Each case once
// retried too often, too long or not at all.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber } from "effect"
import { HttpClient, HttpClientError, HttpClientRequest, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { Fanout, Http, Retry } from "../src/index.ts"

const failure = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit)
    ? (Cause.squash(exit.cause) as { readonly _tag?: string; readonly reason?: { readonly _tag: string } })
    : undefined

/** A client answering by path: `routes[path]` gives status and headers; counts requests per path. */
const routed = (routes: Record<string, { readonly status: number; readonly location?: string }>) => {
  const calls: Array<string> = []
  const client = HttpClient.make((request) =>
    Effect.sync(() => {
      const path = new URL(request.url).pathname
      calls.push(path)
      const { status, location } = routes[path] ?? { status: 404 }
      return HttpClientResponse.fromWeb(
        request,
        new Response(status === 302 ? null : path, { status, headers: location === undefined ? {} : { location } })
      )
    })
  )
  return { client, calls }
}

const NoDelays = Retry.layer({ jitter: false, baseDelay: "10 millis", budget: false })

describe("Retry where loops meet", () => {
  it.effect("a wrapper under a transform under another wrapper does not retry again", () =>
    Effect.gen(function* () {
      const { client, calls } = routed({ "/x": { status: 503 } })
      const outer = Retry.withPolicy(
        HttpClient.mapRequest(Retry.withPolicy(client), HttpClientRequest.setHeader("x-a", "1"))
      )
      const fiber = yield* Effect.forkChild(outer.get("http://api.test/x"))
      yield* TestClock.adjust("1 minute")
      // Given up on: the last 503 is returned, as the client returns it.
      assert.strictEqual((yield* Fiber.join(fiber)).status, 503)
      assert.strictEqual(calls.length, 4, "the first try and 3 retries, not 4 x 4")
    }).pipe(Effect.provide(NoDelays))
  )

  it.effect("a redirect hop's retries end with the attempt that made it, and the chain is not run again", () =>
    Effect.gen(function* () {
      const { client, calls } = routed({ "/a": { status: 302, location: "/b" }, "/b": { status: 503 } })
      const fiber = yield* Effect.forkChild(
        Effect.exit(Http.getText("http://api.test/a")).pipe(
          Effect.provideService(HttpClient.HttpClient, client),
          Effect.provide(
            Retry.layer({ jitter: false, baseDelay: "600 millis", attemptTimeout: "1 second", budget: false })
          )
        )
      )
      for (let i = 0; i < 100; i++) yield* TestClock.adjust("100 millis")
      const error = failure(yield* Fiber.join(fiber))
      // The hop's second retry would end past the attempt: the hop fails with its last answer.
      assert.deepStrictEqual(calls, ["/a", "/b", "/b"])
      assert.strictEqual(error?.reason?._tag, "StatusCodeError")
    })
  )

  it.effect("a request a read makes of its own is neither part of a redirect chain nor retried by it", () => {
    const { client, calls } = routed({
      "/a": { status: 302, location: "/b" },
      "/c": { status: 302, location: "/b" },
      "/b": { status: 200 },
      "/list": { status: 200 },
      "/busy": { status: 503 }
    })
    return Effect.gen(function* () {
      // After /a -> /b, the read's own /c -> /b is no redirect loop.
      const nested = Http.send(HttpClientRequest.get("http://api.test/a"), () => Http.getText("http://api.test/c"))
      assert.strictEqual(yield* nested, "/b")
      const batch = Fanout.all(["http://api.test/a"], { read: () => Http.getText("http://api.test/c") })
      assert.deepStrictEqual(yield* batch, ["/b"])
      // The read's request gives up (a 503, retried 3 times): the request that answered 200 is not sent again.
      calls.length = 0
      const fiber = yield* Effect.forkChild(
        Effect.exit(
          Http.send(HttpClientRequest.get("http://api.test/list"), () => Http.getText("http://api.test/busy"))
        )
      )
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(failure(yield* Fiber.join(fiber))?.reason?._tag, "StatusCodeError")
      assert.deepStrictEqual(
        [calls.filter((p) => p === "/list").length, calls.filter((p) => p === "/busy").length],
        [1, 4]
      )
    }).pipe(Effect.provideService(HttpClient.HttpClient, client), Effect.provide(NoDelays))
  })

  it.effect(
    "a batch a read runs gives up on its own: the outer request is not sent again, nor the batch's POST",
    () => {
      const { client, calls } = routed({ "/list": { status: 200 }, "/busy": { status: 503 } })
      const count = (path: string) => calls.filter((p) => p === path).length
      const settle = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.gen(function* () {
          calls.length = 0
          const fiber = yield* Effect.forkChild(Effect.exit(effect))
          yield* TestClock.adjust("1 minute")
          assert.strictEqual(failure(yield* Fiber.join(fiber))?.reason?._tag, "StatusCodeError")
          return [count("/list"), count("/busy")]
        })
      const batchOf = (request: string | HttpClientRequest.HttpClientRequest) =>
        Fanout.all([request], { read: (r) => r.text })
      return Effect.gen(function* () {
        // The batch's item: 1 try and 3 retries; each of them once (they were 4 x 4).
        const list = HttpClientRequest.get("http://api.test/list")
        assert.deepStrictEqual(yield* settle(Http.send(list, () => batchOf("http://api.test/busy"))), [1, 4])
        assert.deepStrictEqual(
          yield* settle(Fanout.all([list], { read: () => batchOf("http://api.test/busy") })),
          [1, 4]
        )
        // A POST the policy never retries, failed with a retryable status: sent once (it was 4 times).
        const post = HttpClientRequest.post("http://api.test/busy")
        assert.deepStrictEqual(yield* settle(Http.send(list, () => batchOf(post))), [1, 1])
      }).pipe(Effect.provideService(HttpClient.HttpClient, client), Effect.provide(NoDelays))
    }
  )

  it.effect("a request that could never be sent leaves the budget, even after the clock went back", () =>
    Effect.gen(function* () {
      const policy = yield* Retry.make({ budget: { ratio: 1, minPerSecond: 0, window: "10 seconds" } })
      const budget = policy.budget!
      const request = HttpClientRequest.get("http://api.test/x")
      const unsent = Effect.fail(
        new HttpClientError.HttpClientError({
          reason: new HttpClientError.InvalidUrlError({ request, description: "bad" })
        })
      )
      yield* TestClock.setTime(5000)
      budget.request(5000)
      budget.unrequest(5000)
      yield* TestClock.setTime(2000)
      for (let i = 0; i < 5; i++) yield* Effect.exit(Retry.run(policy, request, unsent))
      assert.isFalse(budget.tryRetry(2000), "no request was sent: nothing funds a retry")
    })
  )
})
