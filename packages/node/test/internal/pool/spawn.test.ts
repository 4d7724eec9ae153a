// A pool the OS refuses threads to while it grows (`new Worker` throwing, as at a container's
// pids limit). That cannot be arranged here (root ignores RLIMIT_NPROC, and resourceLimits fail
// every thread alike), so `spawnThread` refuses every thread after the first, by a module mock.
import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect, Exit, Fiber, Scope } from "effect"
import { TestClock } from "effect/testing"
import { vi } from "vitest"
import * as P from "../../fixtures/poolTasks.ts"
import { blockFlags, eventLoopTurn, eventually, release, withPool } from "./helpers.ts"

const spawns = vi.hoisted(() => ({ allowed: 1, made: 0, refused: 0 }))

vi.mock("../../../src/internal/pool/thread.ts", async (importOriginal) => {
  const original = await importOriginal<typeof import("../../../src/internal/pool/thread.ts")>()
  return {
    ...original,
    spawnThread: (...args: Parameters<typeof original.spawnThread>) => {
      if (spawns.made >= spawns.allowed) {
        spawns.refused++
        throw Object.assign(new Error("EAGAIN"), { code: "ERR_WORKER_INIT_FAILED" })
      }
      spawns.made++
      return original.spawnThread(...args)
    }
  }
})

// The OS allows `n` more threads from now on.
const allow = (n: number) =>
  Effect.sync(() => {
    spawns.allowed = n
    spawns.made = 0
    spawns.refused = 0
  })

describe("a pool refused a thread while it grows", () => {
  it.effect("goes on at the size it has (the breaker stays shut) and tries again after a pause", () =>
    withPool({ maxWorkers: 4, crashLoop: { deaths: 2, cooldown: "1 minute" } })(
      Effect.gen(function* () {
        yield* allow(1)
        const flags = yield* blockFlags
        // The first call gets the one thread the OS allows; the others queue, and the pool's
        // attempts to grow for them are refused.
        const first = yield* Effect.forkChild(Blocking.run(P.block, flags.buffer as SharedArrayBuffer))
        const others = yield* Effect.forEach([1, 2, 3], (n) =>
          Effect.forkChild(Blocking.run(P.slowSquare, { n, millis: 0 }))
        )
        assert.isTrue(yield* eventually(() => Atomics.load(flags, 0) === 1 && spawns.refused >= 1))
        for (let i = 0; i < 5; i++) yield* eventLoopTurn
        // One refusal, then a pause: no retry loop, and no crash-loop breaker failing the calls.
        assert.strictEqual(spawns.refused, 1)
        assert.isTrue(others.every((fiber) => fiber.pollUnsafe() === undefined))
        release(flags)
        yield* Fiber.join(first)
        assert.deepStrictEqual(yield* Fiber.joinAll(others), [1, 4, 9])
        // The pause over, the pool grows again for a call queued behind a busy thread (a task it
        // has never measured: not sent ahead to the busy one).
        yield* TestClock.adjust("1 second")
        spawns.allowed = 2
        const again = yield* blockFlags
        const held = yield* Effect.forkChild(Blocking.run(P.block, again.buffer as SharedArrayBuffer))
        const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
        yield* Fiber.join(next)
        assert.strictEqual(spawns.made, 2)
        release(again)
        yield* Fiber.join(held)
      })
    )
  )

  it.effect("ends a build waiting for minWorkers threads with those the OS allowed", () =>
    Effect.gen(function* () {
      yield* allow(1)
      const executor = yield* NodeBlocking.make({
        minWorkers: 3,
        maxWorkers: 3,
        waitForWorkers: true,
        crashLoop: { deaths: 2, cooldown: "1 minute" }
      })
      assert.strictEqual(spawns.made, 1)
      assert.strictEqual(
        yield* Blocking.run(P.slowSquare, { n: 4, millis: 0 }).pipe(
          Effect.provideService(Blocking.BlockingExecutor, executor)
        ),
        16
      )
    }).pipe(Effect.scoped)
  )

  it.live("drains the queue on the threads it has when it closes, without trying to grow", () =>
    Effect.gen(function* () {
      yield* allow(1)
      const scope = yield* Scope.make()
      const executor = yield* Scope.provide(
        NodeBlocking.make({ maxWorkers: 4, shutdown: "drain", crashLoop: { deaths: 2, cooldown: "1 minute" } }),
        scope
      )
      const flags = yield* blockFlags
      const run = <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor>) =>
        Effect.forkChild(Effect.provideService(effect, Blocking.BlockingExecutor, executor))
      const first = yield* run(Blocking.run(P.block, flags.buffer as SharedArrayBuffer))
      const others = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (n) => run(Blocking.run(P.slowSquare, { n, millis: 0 })))
      assert.isTrue(yield* eventually(() => Atomics.load(flags, 0) === 1 && spawns.refused >= 1))
      // Closed (drain) while six calls wait behind the busy thread: they run on it, none fails.
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      release(flags)
      yield* Fiber.join(first)
      assert.deepStrictEqual(yield* Fiber.joinAll(others), [1, 4, 9, 16, 25, 36])
      yield* Fiber.join(closing)
      assert.strictEqual(spawns.made, 1)
    })
  )
})
