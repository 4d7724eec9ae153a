// The adaptive limit's state machine on explicit time, against a simulated origin
// (fixtures/capacitySim.ts). No sleeps, no sockets; the real-socket version is
// test/fanout-adaptive.test.ts.
import { assert, describe, it } from "@effect/vitest"
import { AdaptiveLimit } from "../../src/internal/fanout/adaptive.ts"
import { type Origin, simulate } from "../fixtures/capacitySim.ts"

const within = (value: number, target: number, share: number) =>
  value >= target * (1 - share) && value <= target * (1 + share)

describe("AdaptiveLimit", () => {
  describe("convergence", () => {
    it("reaches ±25% of the capacity from 1 within 200 responses and stays there", () => {
      const sim = simulate([{ capacity: 24, queue: 16, latency: 100 }], { initial: 1, min: 1, max: 64 })
      const [s] = sim.state
      sim.step(([s]) => s!.done >= 200)
      assert.isTrue(within(s!.limit.limit, 24, 0.25), `limit ${s!.limit.limit} after 200`)
      const settled = s!.done
      sim.step(([s]) => s!.done >= 2000)
      const after = s!.limits.slice(settled)
      // It probes upwards on purpose (the headroom), so it may touch C + 8 now and then.
      const inside = after.filter((l) => within(l, 24, 0.25)).length / after.length
      assert.isAtLeast(inside, 0.85, `limits after 200: ${Math.min(...after)}..${Math.max(...after)}`)
      assert.isAtMost(Math.max(...after), 32)
      assert.isTrue(s!.peakServing <= 24)
    })

    it("settles near each capacity for small and large origins", () => {
      for (const capacity of [2, 4, 8, 32, 60]) {
        const sim = simulate([{ capacity, queue: capacity, latency: 100 }], { initial: 1, min: 1, max: 128 })
        sim.step(([s]) => s!.done >= 3000)
        const [s] = sim.state
        const tail = s!.limits.slice(-500)
        const mean = tail.reduce((a, b) => a + b, 0) / tail.length
        // A small origin: the headroom (at least half a request) is a large share of it.
        const ok = capacity <= 4 ? mean >= capacity && mean <= capacity + 1.5 : within(mean, capacity, 0.25)
        assert.isTrue(ok, `C=${capacity}: mean limit ${mean}`)
      }
    })
  })

  describe("reaction", () => {
    it("follows a capacity that drops from 24 to 6 and rises back", () => {
      const origin: Origin = { capacity: 24, queue: 8, latency: 100 }
      const sim = simulate([origin], { initial: 1, min: 1, max: 64 })
      const [s] = sim.state
      sim.step(([s]) => s!.done >= 500)
      origin.capacity = 6
      const dropped = s!.done
      sim.step(([s]) => s!.done >= dropped + 100)
      assert.isTrue(s!.limit.limit <= 6 + 6, `limit ${s!.limit.limit} 100 responses after the drop`)
      const overloaded = s!.overloaded
      sim.step(([s]) => s!.done >= dropped + 1000)
      assert.strictEqual(s!.overloaded, overloaded, "503s after the limit followed")
      assert.isTrue(within(s!.limit.limit, 6, 0.5))
      origin.capacity = 24
      const rose = s!.done
      sim.step(([s]) => s!.done >= rose + 500)
      assert.isTrue(within(s!.limit.limit, 24, 0.25), `limit ${s!.limit.limit} after the rise`)
    })

    it("halves at most once per round trip on a burst of 503s", () => {
      const limit = new AdaptiveLimit({ initial: 32, min: 1, max: 64 })
      for (let i = 0; i < 32; i++) limit.ended(0, 10, "overload")
      assert.strictEqual(limit.limit, 16)
      assert.strictEqual(limit.reason, "overload")
      limit.ended(11, 20, "timeout")
      assert.strictEqual(limit.limit, 8)
      assert.strictEqual(limit.reason, "timeout")
    })

    it("pauses the origin until the Retry-After time", () => {
      const limit = new AdaptiveLimit({ initial: 8, min: 2, max: 64 })
      limit.ended(0, 100, "overload", 1000)
      assert.strictEqual(limit.reason, "retry-after")
      assert.strictEqual(limit.limit, 4)
      assert.isTrue(limit.paused(1099))
      assert.isFalse(limit.paused(1100))
      assert.strictEqual(limit.pausedUntil, 0)
    })

    it("never goes below min or above max", () => {
      const limit = new AdaptiveLimit({ initial: 4, min: 3, max: 5 })
      for (let t = 0; t < 10; t++) limit.ended(t * 10, t * 10 + 1, "overload")
      assert.strictEqual(limit.limit, 3)
      const sim = simulate([{ capacity: 50, queue: 10, latency: 100 }], { initial: 4, min: 3, max: 5 })
      sim.step(([s]) => s!.done >= 500)
      assert.isTrue(sim.state[0]!.limits.every((l) => l >= 3 && l <= 5))
    })

    it("does not grow while the origin uses less than half of it", () => {
      const limit = new AdaptiveLimit({ initial: 10, min: 1, max: 64 })
      for (let i = 0; i < 100; i++) {
        limit.started(2)
        limit.ended(i, i + 5, "ok")
      }
      assert.strictEqual(limit.limit, 10)
    })
  })

  describe("isolation", () => {
    it("two origins of capacity 4 and 32 each converge to their own", () => {
      const sim = simulate(
        [
          { capacity: 4, queue: 4, latency: 100 },
          { capacity: 32, queue: 8, latency: 100 }
        ],
        { initial: 1, min: 1, max: 64 }
      )
      sim.step((s) => s[0]!.done >= 2000 && s[1]!.done >= 2000)
      const [small, large] = sim.state
      assert.isTrue(within(small!.limit.limit, 4, 0.5), `small ${small!.limit.limit}`)
      assert.isTrue(within(large!.limit.limit, 32, 0.25), `large ${large!.limit.limit}`)
    })
  })
})
