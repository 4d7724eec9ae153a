import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Fiber, Layer, Result } from "effect"
import { HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { Fanout, Http, Resilience, Retry } from "../../../src/index.ts"
import { timedRetry } from "../../fixtures/timedRetry.ts"

/** Moves the clock `steps` times by `step`, letting every fiber run between moves. */
const advance = (steps: number, step: Duration.Input) =>
  Effect.gen(function* () {
    for (let i = 0; i < steps; i++) {
      yield* Effect.yieldNow
      yield* TestClock.adjust(step)
    }
  })

/** `/a` redirects to `/b` after `aDelay` ms; `/b` hangs the first time, then answers 200. */
const redirecting = (aDelay: number) => {
  let b = 0
  return HttpClient.make((request, url) =>
    Effect.suspend(() => {
      if (url.pathname === "/a") {
        const redirect = new Response(null, { status: 302, headers: { location: "http://api.test/b" } })
        return Effect.as(Effect.sleep(aDelay), HttpClientResponse.fromWeb(request, redirect))
      }
      if (b++ === 0) return Effect.never
      return Effect.succeed(HttpClientResponse.fromWeb(request, new Response("ok")))
    })
  )
}

const retry = timedRetry

const outcome = (result: Result.Result<string, unknown>) =>
  Result.isSuccess(result) ? result.success : (result.failure as { readonly _tag: string })._tag

// A hop starting as its attempt does (`/a` answering at once) was due to end with it: its own
// timer raced the attempt's and could end the request with a final DeadlineExceeded (or, under a
// limiter, a final TimeoutError) instead of the attempt's TimeoutError, which is retried.
describe("a redirect hop hanging past attemptTimeout", () => {
  for (const aDelay of [0, 100]) {
    it.effect(
      `fails its attempt with TimeoutError, retried, with and without a rate limit (/a after ${aDelay} ms)`,
      () =>
        Effect.gen(function* () {
          const outcomes: Array<string> = []
          for (const rateLimit of [undefined, { limit: 100, window: "1 second" }] as const) {
            const layer = Resilience.layer(rateLimit === undefined ? { retry } : { rateLimit, retry }).pipe(
              Layer.provide(Layer.succeed(HttpClient.HttpClient, redirecting(aDelay)))
            )
            const fiber = yield* Http.getText("http://api.test/a").pipe(
              Effect.result,
              Effect.provide(layer),
              Effect.forkChild
            )
            yield* advance(100, "100 millis")
            outcomes.push(outcome(yield* Fiber.join(fiber)))
          }
          assert.deepStrictEqual(outcomes, ["ok", "ok"])
        })
    )

    it.effect(`in a batch, is retried with and without perHost (/a after ${aDelay} ms)`, () =>
      Effect.gen(function* () {
        const outcomes: Array<string> = []
        for (const perHost of [undefined, 4]) {
          const fiber = yield* Fanout.allSettled(["http://api.test/a"], { perHost, read: (r) => r.text }).pipe(
            Effect.provideService(HttpClient.HttpClient, redirecting(aDelay)),
            Effect.provide(Retry.layer(retry)),
            Effect.forkChild
          )
          yield* advance(100, "100 millis")
          const [item] = yield* Fiber.join(fiber)
          outcomes.push(outcome(item!))
        }
        assert.deepStrictEqual(outcomes, ["ok", "ok"])
      })
    )
  }
})
