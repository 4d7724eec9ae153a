// `perHost: Fanout.adaptive(...)` with an in-memory HttpClient under TestClock: option
// validation, the Retry-After pause and what progress events show. Convergence on real
// origins: test/fanout-adaptive.test.ts; the state machine itself: test/internal/adaptive.test.ts.
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Metric } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import * as CircuitBreaker from "effect/persistence/CircuitBreaker"
import { TestClock } from "effect/testing"
import { Fanout, Retry } from "../src/index.ts"

/** `/busy` answers 503 with `Retry-After: 5` the first time, then 200; the rest 200 after 10 ms. */
const fake = () => {
  const started: Array<{ url: string; at: number }> = []
  let busy = 0
  const client = HttpClient.make((request, url) =>
    Effect.flatMap(
      Effect.clockWith((clock) => Effect.succeed(clock.currentTimeMillisUnsafe())),
      (at) => {
        started.push({ url: url.href, at })
        if (url.pathname === "/busy" && busy++ === 0) {
          return Effect.succeed(
            HttpClientResponse.fromWeb(request, new Response("busy", { status: 503, headers: { "retry-after": "5" } }))
          )
        }
        return Effect.as(Effect.sleep("10 millis"), HttpClientResponse.fromWeb(request, new Response("ok")))
      }
    )
  )
  return { client, started }
}

/** `/pause` answers 503 with `Retry-After: 10` and `/flaky` 500, each the first time; then 200. */
const pausing = () => {
  const sent: Array<string> = []
  const seen = new Map<string, number>()
  const client = HttpClient.make((request, url) =>
    Effect.clockWith((clock) => {
      const n = seen.get(url.pathname) ?? 0
      seen.set(url.pathname, n + 1)
      sent.push(`${url.pathname}@${clock.currentTimeMillisUnsafe()}`)
      const status = n > 0 ? 200 : url.pathname === "/pause" ? 503 : 500
      const headers: Record<string, string> = url.pathname === "/pause" ? { "retry-after": "10" } : {}
      const delay = url.pathname === "/pause" ? "1 millis" : "2 millis"
      return Effect.as(Effect.sleep(delay), HttpClientResponse.fromWeb(request, new Response("x", { status, headers })))
    })
  )
  return { client, sent }
}

/** `/pause` and `/flaky` in one adaptive batch on `client`, under the retry policy `retry`. */
const pausingBatch = (
  client: HttpClient.HttpClient,
  retry: Retry.Options,
  onProgress?: (progress: Fanout.Progress) => void
) =>
  Fanout.allSettled(["http://x.test/pause", "http://x.test/flaky"], {
    concurrency: 4,
    perHost: Fanout.adaptive({ initial: 2, min: 1, max: 4 }),
    ...(onProgress === undefined ? {} : { onProgress })
  }).pipe(
    Effect.provideService(HttpClient.HttpClient, client),
    Effect.provide(Retry.layer({ retries: 2, baseDelay: "100 millis", jitter: false, budget: false, ...retry })),
    Effect.forkChild
  )

const failure = <A, E>(exit: Exit.Exit<A, E>) => (Exit.isFailure(exit) ? exit.cause : undefined)

describe("Fanout.adaptive", () => {
  describe("options", () => {
    const cases: ReadonlyArray<[Fanout.AdaptiveOptions, string]> = [
      [{ min: 8, max: 4 }, "perHost.min"],
      [{ initial: 2, min: 4, max: 8 }, "perHost.initial"],
      [{ initial: 16, min: 1, max: 8 }, "perHost.initial"],
      [{ initial: 0 }, "perHost.initial"],
      [{ min: 0 }, "perHost.min"],
      [{ max: Number.NaN }, "perHost.max"],
      [{ initial: 2.5 }, "perHost.initial"]
    ]
    for (const [options, option] of cases) {
      it.effect(`fails with InvalidOptionsError naming ${option} for ${JSON.stringify(options)}`, () =>
        Effect.gen(function* () {
          const { client } = fake()
          const exit = yield* Fanout.all(["http://a.test/x"], { perHost: Fanout.adaptive(options) }).pipe(
            Effect.provideService(HttpClient.HttpClient, client),
            Effect.exit
          )
          const cause = failure(exit)
          assert.isDefined(cause)
          const error = cause!.reasons[0]
          assert.strictEqual(error?._tag, "Fail")
          const value = (error as { error: { _tag: string; option: string } }).error
          assert.strictEqual(value._tag, "InvalidOptionsError")
          assert.strictEqual(value.option, option)
        })
      )
    }
  })

  describe("Retry-After", () => {
    it.effect("pauses only the origin that asked, until the time it gave", () =>
      Effect.gen(function* () {
        const { client, started } = fake()
        const urls = [
          "http://slow.test/busy",
          ...Array.from({ length: 3 }, (_, i) => `http://slow.test/x${i}`),
          ...Array.from({ length: 3 }, (_, i) => `http://fast.test/x${i}`)
        ]
        const fiber = yield* Fanout.allSettled(urls, {
          concurrency: 8,
          perHost: Fanout.adaptive({ initial: 1, min: 1, max: 4 })
        }).pipe(
          Effect.provideService(HttpClient.HttpClient, client),
          Effect.provide(Retry.layer({ retries: 1, jitter: false, budget: false })),
          Effect.forkChild
        )
        yield* TestClock.adjust("1 second")
        // The other origin went on; the paused one started nothing new.
        assert.strictEqual(started.filter((s) => s.url.startsWith("http://fast.test")).length, 3)
        assert.deepStrictEqual(
          started.filter((s) => s.url.startsWith("http://slow.test")).map((s) => s.url),
          ["http://slow.test/busy"]
        )
        yield* TestClock.adjust("5 seconds")
        const results = yield* Fiber.join(fiber)
        assert.strictEqual(results.filter((r) => r._tag === "Success").length, urls.length)
        const slow = started.filter((s) => s.url.startsWith("http://slow.test"))
        assert.isTrue(slow.slice(1).every((s) => s.at >= 5000))
      })
    )
    it.effect("reports an origin's pause in progress only while it lasts", () =>
      Effect.gen(function* () {
        let n = 0
        const client = HttpClient.make((request) =>
          Effect.as(
            Effect.sleep("10 millis"),
            HttpClientResponse.fromWeb(
              request,
              n++ === 0 ? new Response("busy", { status: 503, headers: { "retry-after": "5" } }) : new Response("ok")
            )
          )
        )
        const seen: Array<{ readonly at: number; readonly origins: ReadonlyArray<Fanout.OriginProgress> }> = []
        const clock = yield* Effect.clockWith(Effect.succeed)
        const now = () => Number(clock.monotonicTimeNanosUnsafe()) / 1e6
        const fiber = yield* Fanout.allSettled(["http://a.test/x", "http://b.test/y"], {
          concurrency: 4,
          perHost: Fanout.adaptive({ initial: 1, min: 1, max: 4 }),
          onProgress: (progress) => seen.push({ at: now(), origins: progress.origins ?? [] })
        }).pipe(
          Effect.provideService(HttpClient.HttpClient, client),
          Effect.provide(Retry.layer({ retries: 1, jitter: false, budget: false })),
          Effect.forkChild
        )
        yield* TestClock.adjust("10 seconds")
        assert.isTrue((yield* Fiber.join(fiber)).every((result) => result._tag === "Success"))
        assert.isTrue(seen.some(({ origins }) => origins.some((o) => o.pausedUntil !== undefined)))
        for (const { at, origins } of seen) {
          for (const o of origins) if (o.pausedUntil !== undefined) assert.isAbove(o.pausedUntil, at, o.origin)
        }
      })
    )
  })

  describe("Retry-After, retries", () => {
    it.effect("holds the retry of an item already running at the paused origin until the pause ends", () =>
      Effect.gen(function* () {
        // Both start at once: /pause asks for 10 s of quiet; /flaky failed with a 500 and would be
        // retried after 100 ms, in the middle of that pause.
        const { client, sent } = pausing()
        const fiber = yield* pausingBatch(client, {})
        yield* TestClock.adjust("30 seconds")
        const results = yield* Fiber.join(fiber)
        assert.isTrue(results.every((r) => r._tag === "Success"))
        // The retry of /flaky waited for the pause to end, as /pause's own did. /pause's waited out
        // of its slots, and took the origin's back under its halved limit (1), after /flaky's retry.
        assert.deepStrictEqual([...sent].sort(), ["/flaky@0", "/flaky@10001", "/pause@0", "/pause@10003"])
      })
    )
  })

  describe("Retry-After, attemptTimeout", () => {
    it.effect("times a held retry from when the pause ends, not while it waits for it", () =>
      Effect.gen(function* () {
        const { client, sent } = pausing()
        let retried = 0
        const fiber = yield* pausingBatch(client, { attemptTimeout: "1 second" }, (progress) => {
          retried = progress.retried
        })
        yield* TestClock.adjust("30 seconds")
        const results = yield* Fiber.join(fiber)
        // The retry of /flaky waited 10 s for the pause with an attemptTimeout of 1 s, and went
        // once the pause ended (before, the wait counted: it timed out, and so did its retries).
        assert.isTrue(results.every((r) => r._tag === "Success"))
        assert.deepStrictEqual([...sent].sort(), ["/flaky@0", "/flaky@10001", "/pause@0", "/pause@10003"])
        assert.strictEqual(retried, 2)
      })
    )

    it.effect("still ends a wait for the pause at the total timeout, with DeadlineExceeded", () =>
      Effect.gen(function* () {
        const { client, sent } = pausing()
        const fiber = yield* pausingBatch(client, { attemptTimeout: "1 second", timeout: "3 seconds" })
        yield* TestClock.adjust("30 seconds")
        const [pause, flaky] = yield* Fiber.join(fiber)
        // /pause: its Retry-After is past the timeout. /flaky: its retry waited for the pause
        // until the timeout ended it, unsent.
        assert.strictEqual(pause?._tag === "Failure" && pause.failure._tag, "RetryAfterTooLong")
        assert.strictEqual(flaky?._tag === "Failure" && flaky.failure._tag, "DeadlineExceeded")
        assert.deepStrictEqual([...sent].sort(), ["/flaky@0", "/pause@0"])
      })
    )
  })

  describe("metrics", () => {
    // An origin idle long enough is forgotten (a batch keeps the last 1,024 idle ones): met
    // again, it starts from `initial`, and its gauge must say so, not the limit it had learnt.
    it.effect("sets a forgotten origin's limit gauge back to its initial limit", () =>
      Effect.gen(function* () {
        const client = HttpClient.make((request, url) =>
          Effect.succeed(
            HttpClientResponse.fromWeb(request, new Response("x", { status: url.host === "learnt.test" ? 503 : 200 }))
          )
        )
        const limitOf = (origin: string) =>
          Effect.map(Metric.snapshot, (metrics) => {
            const found = metrics.find(
              (metric) => metric.id === "volley_fanout_origin_limit" && metric.attributes?.origin === origin
            )
            return (found?.state as { readonly value: number } | undefined)?.value
          })
        const others = Array.from({ length: 1_100 }, (_, i) => `http://o${i}.forget.test/`)
        const registry = new Map()
        // A batch of `urls`, then the gauge of learnt.test's limit.
        const limitAfter = (urls: ReadonlyArray<string>) =>
          Fanout.allSettled(urls, { concurrency: 16, perHost: Fanout.adaptive({ initial: 8, min: 1, max: 16 }) }).pipe(
            Effect.andThen(limitOf("http://learnt.test")),
            Effect.provideService(HttpClient.HttpClient, client),
            Effect.provide(Retry.layer({ retries: 0 })),
            Effect.provideService(Metric.MetricRegistry, registry)
          )
        const learnt = yield* limitAfter(["http://learnt.test/", "http://learnt.test/"])
        assert.isBelow(learnt!, 8, "two 503s lowered the limit")
        assert.strictEqual(yield* limitAfter(["http://learnt.test/", "http://learnt.test/", ...others]), 8)
      })
    )

    // Found by review: the counter of limit changes counted every round whose exact (fractional)
    // limit was set, the integer limit moving or not: one held at `max` (each round clamped back
    // to it) counted a change a round trip, for good.
    it.effect("counts a change only when the limit moves", () =>
      Effect.gen(function* () {
        const { client } = fake()
        const limits: Array<number> = []
        const registry = new Map()
        const fiber = yield* Fanout.allSettled(
          Array.from({ length: 400 }, (_, i) => `http://a.test/x${i}`),
          {
            concurrency: 4,
            perHost: Fanout.adaptive({ initial: 1, min: 1, max: 4 }),
            onProgress: (p) => {
              const limit = p.origins?.[0]?.limit
              if (limit !== undefined && limit !== limits.at(-1)) limits.push(limit)
            }
          }
        ).pipe(
          Effect.provideService(HttpClient.HttpClient, client),
          Effect.provideService(Metric.MetricRegistry, registry),
          Effect.forkChild
        )
        yield* TestClock.adjust("10 seconds")
        yield* Fiber.join(fiber)
        const changes = yield* Effect.map(Metric.snapshot, (metrics) =>
          metrics
            .filter(
              (m) => m.id === "volley_fanout_origin_limit_changes_total" && m.attributes?.origin === "http://a.test"
            )
            .reduce((sum, m) => sum + (m.state as { readonly count: number }).count, 0)
        ).pipe(Effect.provideService(Metric.MetricRegistry, registry))
        // From 1 up to max, where it stays: as many changes as moves.
        assert.strictEqual(limits.at(-1), 4)
        assert.strictEqual(changes, limits.length - 1)
      })
    )
  })

  // Found by review: a request the client's own circuit breaker refused (nothing sent) read as the
  // origin's overload, and each such refusal cut the origin's limit.
  it.effect("leaves an origin's limit alone when the client's own breaker refuses its requests", () =>
    Effect.gen(function* () {
      const refusing = HttpClient.make((request) =>
        Effect.fail(
          new HttpClientError.HttpClientError({
            reason: new HttpClientError.TransportError({
              request,
              cause: new CircuitBreaker.CircuitBreakerError({
                reason: new CircuitBreaker.CircuitOpen({ key: "http://a.test", retryAfter: Duration.seconds(30) })
              })
            })
          })
        )
      )
      const seen: Array<Fanout.OriginProgress> = []
      yield* Fanout.allSettled(
        Array.from({ length: 40 }, (_, i) => `http://a.test/x${i}`),
        {
          concurrency: 8,
          perHost: Fanout.adaptive({ initial: 8, min: 1, max: 16 }),
          onProgress: (p) => seen.push(...(p.origins ?? []))
        }
      ).pipe(Effect.provideService(HttpClient.HttpClient, refusing))
      assert.strictEqual(Math.min(...seen.map((o) => o.limit)), 8)
    }).pipe(Effect.provide(Retry.layer({ retries: 0 })))
  )

  describe("progress", () => {
    it.effect("shows each origin's limit, in flight, baseline and reason", () =>
      Effect.gen(function* () {
        const { client } = fake()
        const seen: Array<Fanout.OriginProgress> = []
        const fiber = yield* Fanout.all(
          Array.from({ length: 40 }, (_, i) => `http://a.test/x${i}`),
          {
            concurrency: 16,
            perHost: Fanout.adaptive({ initial: 1, min: 1, max: 16 }),
            onProgress: (p) => seen.push(...(p.origins ?? []))
          }
        ).pipe(Effect.provideService(HttpClient.HttpClient, client), Effect.forkChild)
        yield* TestClock.adjust("1 second")
        yield* Fiber.join(fiber)
        const last = seen.at(-1)!
        assert.strictEqual(last.origin, "http://a.test")
        assert.strictEqual(last.baselineMillis, 10)
        assert.isAbove(last.limit, 1)
        assert.include(["slow-start", "headroom"], last.reason)
        assert.isAtMost(Math.max(...seen.map((o) => o.inFlight)), 16)
      })
    )
  })
})
