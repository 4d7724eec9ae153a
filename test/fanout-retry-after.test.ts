// A `Retry-After` in a batch without `perHost`: the retry waits out of its slot with its origin
// paused, against real node:http origins through @volley/node's client. The retries' waits run on
// TestClock; the origins answer in real time, so the test waits for progress events (bounded by
// a real timer) before it moves the clock.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Fiber, Layer, Queue, Result } from "effect"
import type { HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"

/**
 * Origins on 127.0.0.1 that count together the requests in flight (the batch's, at its peak) and
 * each its own. `/item?i=n` answers `<name><n>`, after `delay` ms (real time); with `busy=1`, the
 * first request of each `n` gets a 429 with `Retry-After: 30` instead. `/redirect?to=url` answers
 * a 302 to `url`.
 */
const origins = (names: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      let inFlight = 0
      let peak = 0
      const servers = await Promise.all(
        names.map(
          (name) =>
            new Promise<{ url: string; requests: () => number; close: () => Promise<void> }>((resolve) => {
              let requests = 0
              const seen = new Set<string>()
              const server = createServer((req: IncomingMessage, res: ServerResponse) => {
                requests++
                inFlight++
                peak = Math.max(peak, inFlight)
                res.on("close", () => inFlight--)
                const url = new URL(req.url ?? "/", "http://x")
                const i = url.searchParams.get("i") ?? ""
                if (url.pathname === "/redirect") {
                  return res.writeHead(302, { location: url.searchParams.get("to") ?? "/" }).end()
                }
                if (url.searchParams.get("busy") === "1" && !seen.has(i)) {
                  seen.add(i)
                  return res.writeHead(429, { "retry-after": "30" }).end("busy")
                }
                setTimeout(() => res.end(`${name}${i}`), Number(url.searchParams.get("delay") ?? 0))
              })
              server.listen(0, "127.0.0.1", () => {
                const { port } = server.address() as AddressInfo
                resolve({
                  url: `http://127.0.0.1:${port}`,
                  requests: () => requests,
                  close: () =>
                    new Promise<void>((done) => {
                      server.closeAllConnections()
                      server.close(() => done())
                    })
                })
              })
            })
        )
      )
      return { servers, peak: () => peak }
    }),
    ({ servers }) => Effect.promise(() => Promise.all(servers.map((server) => server.close())))
  )

/** Progress events, the last one kept; `until` waits (5 s of real time at most) for one that holds. */
const watch = Effect.map(Queue.unbounded<Fanout.Progress>(), (queue) => {
  let last: Fanout.Progress | undefined
  const onProgress = (p: Fanout.Progress) => {
    last = { ...p }
    Queue.offerUnsafe(queue, last)
  }
  const seen = (check: (p: Fanout.Progress) => boolean): Effect.Effect<void> =>
    Effect.flatMap(Queue.take(queue), (p) => (check(p) ? Effect.void : seen(check)))
  const tooLate = Effect.callback<never, Error>((resume) => {
    const timer = setTimeout(() => resume(Effect.fail(new Error("no such progress within 5 s"))), 5000)
    return Effect.sync(() => clearTimeout(timer))
  })
  const until = (check: (p: Fanout.Progress) => boolean) =>
    // The worker that reported it goes on synchronously (to its next item, or to wait): let it.
    Effect.raceFirst(seen(check), tooLate).pipe(Effect.andThen(Effect.yieldNow), Effect.andThen(Effect.yieldNow))
  return { onProgress, until, last: () => last! }
})

const started = (p: Fanout.Progress) => p.done + p.inFlight

const bodies = (results: ReadonlyArray<Result.Result<string, unknown>>) =>
  results.map((r) => (Result.isSuccess(r) ? r.success : "failed"))

const text = (r: HttpClientResponse.HttpClientResponse) => r.text
const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ jitter: false, budget: false }))

describe("Fanout: a Retry-After without perHost", () => {
  // Found by review: a retry waited out its Retry-After in its slot of `concurrency`, so an origin
  // answering 429 (Retry-After: 30) to as many items as there were slots stalled every other
  // origin's items for 30 s.
  it.effect("pauses only its origin: the other origin's items run in the freed slots", () =>
    Effect.gen(function* () {
      const { servers, peak } = yield* origins(["a", "b"])
      const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]]
      // 0-7 at A, each answered 429 first; then B and A in turn (A's queued behind its pause).
      const urls = [
        ...Array.from({ length: 8 }, (_, i) => `${a.url}/item?i=${i}&busy=1`),
        ...Array.from({ length: 16 }, (_, k) => (k % 2 === 0 ? `${b.url}/item?i=${k + 8}` : `${a.url}/item?i=${k + 8}`))
      ]
      const progress = yield* watch
      const fiber = yield* Fanout.allSettled(urls, {
        concurrency: 8,
        read: text,
        onProgress: progress.onProgress
      }).pipe(Effect.forkChild)
      // B's 8 items all complete while A's pause runs (the clock has not moved).
      yield* progress.until((p) => p.done === 8 && p.retried === 8)
      assert.strictEqual(b.requests(), 8)
      // A was sent nothing new: its 8 first items wait (in flight, holding no slot), the rest is queued.
      assert.strictEqual(a.requests(), 8)
      assert.strictEqual(started(progress.last()), 16)
      yield* TestClock.adjust("29999 millis")
      assert.strictEqual(a.requests(), 8)
      yield* TestClock.adjust("1 millis")
      const results = yield* Fiber.join(fiber)
      assert.deepStrictEqual(
        bodies(results),
        urls.map((url, i) => `${url.startsWith(a.url) ? "a" : "b"}${i}`)
      )
      assert.strictEqual(a.requests(), 24) // 8 + their 8 retries + 8 more
      assert.isAtMost(peak(), 8)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  // Found by review (the first fix gave the slot back without a pause): against one origin, the
  // items whose requests were in flight as the 429 came went on sending that origin new items
  // during its Retry-After.
  it.effect("against one origin, sends nothing new during the pause", () =>
    Effect.gen(function* () {
      const { servers, peak } = yield* origins(["a"])
      const a = servers[0]!
      // 0 is answered 429 at once; 1-3, in flight meanwhile, after 100 ms; 4-11 at once.
      const urls = Array.from({ length: 12 }, (_, i) =>
        i === 0 ? `${a.url}/item?i=0&busy=1` : `${a.url}/item?i=${i}&delay=${i < 4 ? 100 : 0}`
      )
      const progress = yield* watch
      const fiber = yield* Fanout.allSettled(urls, {
        concurrency: 4,
        read: text,
        onProgress: progress.onProgress
      }).pipe(Effect.forkChild)
      yield* progress.until((p) => p.done === 3)
      // 1-3 finished; none of 4-11 started in their slots.
      assert.strictEqual(started(progress.last()), 4)
      assert.strictEqual(a.requests(), 4)
      yield* TestClock.adjust("30 seconds")
      const results = yield* Fiber.join(fiber)
      assert.deepStrictEqual(
        bodies(results),
        urls.map((_, i) => `a${i}`)
      )
      assert.strictEqual(a.requests(), 13)
      assert.isAtMost(peak(), 4)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.effect("an item waiting out its origin's pause is interrupted with its batch, nothing more sent", () =>
    Effect.gen(function* () {
      const { servers } = yield* origins(["a", "b"])
      const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]]
      const urls = [`${a.url}/item?i=0&busy=1`, ...Array.from({ length: 3 }, (_, i) => `${b.url}/item?i=${i + 1}`)]
      const progress = yield* watch
      const fiber = yield* Fanout.allSettled(urls, { concurrency: 2, onProgress: progress.onProgress }).pipe(
        Effect.forkChild
      )
      yield* progress.until((p) => p.done === 3)
      // Ends at once (the clock has not moved): the parked retry holds nothing that waits.
      yield* Fiber.interrupt(fiber)
      assert.strictEqual(a.requests(), 1)
      assert.strictEqual(b.requests(), 3)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.effect("an item whose pause ended but that finds no free slot before the deadline fails with it, unsent", () =>
    Effect.gen(function* () {
      const { servers } = yield* origins(["a", "b"])
      const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]]
      // 0 parks for 30 s; B's items hold the one slot for 2 s of real time each meanwhile.
      const urls = [
        `${a.url}/item?i=0&busy=1`,
        ...Array.from({ length: 3 }, (_, i) => `${b.url}/item?i=${i + 1}&delay=2000`)
      ]
      const progress = yield* watch
      const fiber = yield* Fanout.allSettled(urls, {
        concurrency: 1,
        deadline: "31 seconds",
        read: text,
        onProgress: progress.onProgress
      }).pipe(Effect.forkChild)
      yield* progress.until((p) => p.retried === 1 && p.inFlight === 2)
      yield* TestClock.adjust("31 seconds")
      const results = yield* Fiber.join(fiber)
      const first = results[0]!
      assert.isTrue(Result.isFailure(first) && (first.failure as { _tag: string })._tag === "DeadlineExceeded")
      assert.strictEqual(a.requests(), 1)
      assert.isAtMost(b.requests(), 3)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  // Found by review: a redirect hop's retry waited out its Retry-After in its item's slot.
  it.effect("a redirect hop's Retry-After pauses the hop's origin, not the batch", () =>
    Effect.gen(function* () {
      const { servers, peak } = yield* origins(["a", "b"])
      const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]]
      const hop = encodeURIComponent(`${a.url}/item?i=0&busy=1`)
      const urls = [`${b.url}/redirect?to=${hop}`, ...Array.from({ length: 3 }, (_, i) => `${b.url}/item?i=${i + 1}`)]
      const progress = yield* watch
      const fiber = yield* Fanout.allSettled(urls, {
        concurrency: 1,
        read: text,
        onProgress: progress.onProgress
      }).pipe(Effect.forkChild)
      yield* progress.until((p) => p.done === 3)
      assert.strictEqual(a.requests(), 1)
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(bodies(yield* Fiber.join(fiber)), ["a0", "b1", "b2", "b3"])
      assert.strictEqual(a.requests(), 2)
      assert.strictEqual(peak(), 1)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )
})
