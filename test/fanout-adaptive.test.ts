// Adaptive per-origin limits against real capacity origins (test/support/capacityOrigin.ts, in
// child processes so their timers do not share the client's event loop) through @volley/node's
// undici client, on the real clock. The assertions are on invariants (where the limit goes,
// whether 503s stop), counted in requests, never on how long anything took.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Deferred, Effect, Fiber, Layer, Result } from "effect"
import { type CapacityOrigin, capacityOrigin, remoteCapacityOrigin } from "./support/capacityOrigin.ts"
import { origin as plainOrigin } from "./support/origin.ts"

const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 2, baseDelay: "5 millis" }))

/** What a batch's progress events said about each origin, one entry per event. */
const recorder = () => {
  const events: Array<{ done: number; limits: Map<string, number> }> = []
  const waiters: Array<{ done: number; resolve: () => void }> = []
  const onProgress = (p: Fanout.Progress) => {
    const limits = new Map<string, number>()
    for (const o of p.origins ?? []) limits.set(o.origin, o.limit)
    events.push({ done: p.done, limits })
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (p.done >= waiters[i]!.done) waiters.splice(i, 1)[0]!.resolve()
    }
  }
  /** Waits (real time) until `done` requests have finished. */
  const reached = (done: number) =>
    Effect.callback<void>((resume) => {
      if ((events.at(-1)?.done ?? 0) >= done) return resume(Effect.void)
      waiters.push({ done, resolve: () => resume(Effect.void) })
    })
  const limitsOf = (origin: CapacityOrigin, from: number, to = Number.POSITIVE_INFINITY) =>
    events.filter((e) => e.done >= from && e.done < to).map((e) => e.limits.get(origin.url) ?? 0)
  const last = (origin: CapacityOrigin) => events.at(-1)?.limits.get(origin.url) ?? 0
  return { onProgress, reached, limitsOf, last, events }
}

const urls = (origin: CapacityOrigin, n: number) => Array.from({ length: n }, (_, i) => `${origin.url}/r/${i}`)
const within = (value: number, target: number, share: number) =>
  value >= target * (1 - share) && value <= target * (1 + share)
const share = (values: ReadonlyArray<number>, ok: (v: number) => boolean) =>
  values.filter(ok).length / Math.max(1, values.length)

describe("Fanout.adaptive (real origins)", () => {
  it.live("the capacity origin serves C at once, queues Q and answers 503 past C + Q", () =>
    Effect.gen(function* () {
      const origin = yield* capacityOrigin({ capacity: 4, queue: 4, latency: 500 })
      const results = yield* Fanout.allSettled(urls(origin, 16), { concurrency: 16 }).pipe(
        Effect.provide(Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 })))
      )
      const stats = yield* origin.stats
      assert.strictEqual(stats.peakServing, 4)
      assert.strictEqual(stats.rejected, 8)
      assert.strictEqual(results.filter(Result.isSuccess).length, 8)
    }).pipe(Effect.scoped)
  )

  it.live("converges from 1 to within ±25% of C = 24 after 200 responses and stays there", () =>
    Effect.gen(function* () {
      const origin = yield* remoteCapacityOrigin({ capacity: 24, queue: 16, latency: 200 })
      const rec = recorder()
      yield* Fanout.allSettled(urls(origin, 800), {
        concurrency: 64,
        perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 }),
        onProgress: rec.onProgress
      }).pipe(Effect.provide(Live))
      // Until the input runs dry: the last requests in flight no longer say anything.
      const after = rec.limitsOf(origin, 200, 750)
      // The median, and most of the time: latency is the signal, and on a busy machine (2 vCPUs
      // shared with other test files) a stall of the client reads as a queue for a moment.
      const sorted = [...after].sort((a, b) => a - b)
      const median = sorted[sorted.length >> 1]!
      assert.isTrue(within(median, 24, 0.25), `median limit after 200: ${median}`)
      const ok = share(after, (l) => within(l, 24, 0.25))
      assert.isAtLeast(ok, 0.5, `limits after 200: ${Math.min(...after)}..${Math.max(...after)}`)
      assert.isAtMost((yield* origin.stats).peakServing, 24)
    }).pipe(Effect.scoped)
  )

  it.live("follows C from 24 down to 6 (503s stop) and back up to 24", () =>
    Effect.gen(function* () {
      const origin = yield* remoteCapacityOrigin({ capacity: 24, queue: 8, latency: 50 })
      const rec = recorder()
      const batch = yield* Fanout.allSettled(urls(origin, 2400), {
        concurrency: 64,
        perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 }),
        onProgress: rec.onProgress
      }).pipe(Effect.provide(Live), Effect.forkChild)
      yield* rec.reached(500)
      yield* origin.setCapacity(6)
      const dropped = rec.events.at(-1)!.done
      // Within 200 responses: under 2 s at C = 6.
      yield* rec.reached(dropped + 200)
      const followed = rec.last(origin)
      assert.isAtMost(followed, 12, `limit ${followed} 200 responses after the drop`)
      const rejectedThen = (yield* origin.stats).rejected
      yield* rec.reached(dropped + 700)
      const low = rec.limitsOf(origin, dropped + 200, dropped + 700)
      assert.isAtLeast(
        share(low, (l) => l >= 3 && l <= 12),
        0.9,
        `limits ${Math.min(...low)}..${Math.max(...low)}`
      )
      assert.strictEqual((yield* origin.stats).rejected, rejectedThen, "503s after the limit followed")
      yield* origin.setCapacity(24)
      const rose = rec.events.at(-1)!.done
      yield* Fiber.join(batch)
      // Back up: the limits between 400 responses after the rise and the input's end.
      const high = rec.limitsOf(origin, rose + 400, 2300).sort((a, b) => a - b)
      const median = high[high.length >> 1]!
      assert.isTrue(within(median, 24, 0.25), `median limit ${median} after the rise`)
    }).pipe(Effect.scoped)
  )

  it.live("a redirect hop takes a slot under its own origin's limit, which learns from the hops", () =>
    Effect.gen(function* () {
      // Every item is redirected from a fast origin to one that serves 6 at once (10 with its
      // queue): only the hops reach it, so only they can teach it its limit.
      const target = yield* remoteCapacityOrigin({ capacity: 6, queue: 4, latency: 50 })
      const front = yield* plainOrigin({
        "/r": (req, res) => {
          res.writeHead(302, { location: `${target.url}/r/${new URL(req.url!, "http://x").searchParams.get("i")}` })
          res.end()
        }
      })
      const rec = recorder()
      const n = 400
      const results = yield* Fanout.allSettled(
        Array.from({ length: n }, (_, i) => `${front.url}/r?i=${i}`),
        { concurrency: 32, perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 }), onProgress: rec.onProgress }
      ).pipe(Effect.provide(Live))
      const stats = yield* target.stats
      // Unlimited there, the front's fast 302s let up to 32 hops at once at the target: more
      // than half of them 503s (measured: 514 of 660 requests). Slow start may overshoot once.
      assert.isBelow(stats.rejected, n * 0.1, `${stats.rejected} 503s at the hops' origin`)
      assert.isAtLeast(results.filter(Result.isSuccess).length, n * 0.95)
      const limits = rec.limitsOf(target, 200)
      assert.isAtLeast(
        share(limits, (l) => l >= 3 && l <= 12),
        0.8,
        `hop origin limits ${Math.min(...limits)}..${Math.max(...limits)}`
      )
    }).pipe(Effect.scoped)
  )

  it.live("two origins of C = 4 and C = 32 in one batch each converge to their own", () =>
    Effect.gen(function* () {
      const small = yield* remoteCapacityOrigin({ capacity: 4, queue: 8, latency: 200 })
      const large = yield* remoteCapacityOrigin({ capacity: 32, queue: 16, latency: 200 })
      const rec = recorder()
      const a = urls(small, 250)
      const b = urls(large, 1000)
      // Interleaved, in proportion to their capacity, so both stay busy to the end.
      const mixed = b.flatMap((url, i) => (i % 4 === 0 ? [a[i / 4]!, url] : [url]))
      yield* Fanout.allSettled(mixed, {
        concurrency: 64,
        perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 }),
        onProgress: rec.onProgress
      }).pipe(Effect.provide(Live))
      const smallLimits = rec.limitsOf(small, 400, 1150)
      const largeLimits = rec.limitsOf(large, 400, 1150)
      assert.isAtLeast(
        share(smallLimits, (l) => l >= 2 && l <= 8),
        0.8,
        `small ${smallLimits.slice(-5)}`
      )
      // Not dragged down to the small one's limit, nor it up to the large one's. (Bands wider
      // than the convergence test's: each has a fraction of the responses, so fewer rounds.)
      assert.isAtLeast(
        share(largeLimits, (l) => l >= 22 && l <= 45),
        0.8,
        `large ${largeLimits.slice(-5)}`
      )
      assert.isAtMost((yield* small.stats).peakServing, 4)
    }).pipe(Effect.scoped)
  )

  it.live("pauses an origin that answers Retry-After", () =>
    Effect.gen(function* () {
      const origin = yield* capacityOrigin({ capacity: 2, queue: 0, latency: 20, retryAfter: 1 })
      const paused = yield* Deferred.make<number>()
      const started = Date.now()
      yield* Fanout.allSettled(urls(origin, 12), {
        concurrency: 12,
        perHost: Fanout.adaptive({ initial: 8, min: 1, max: 8 }),
        onProgress: (p) => {
          const until = p.origins?.[0]?.pausedUntil
          if (until !== undefined) Deferred.doneUnsafe(paused, Effect.succeed(until))
        }
      }).pipe(Effect.provide(Live))
      assert.isTrue(Deferred.isDoneUnsafe(paused))
      // Everything after the first 503s waited for the pause: the batch took about a second.
      assert.isAtLeast(Date.now() - started, 900)
    }).pipe(Effect.scoped)
  )
})
