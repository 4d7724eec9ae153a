import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect, Fiber } from "effect"
import { waitForFlag } from "../../../../core/test/shared/blockingSuite.ts"
import * as P from "../../fixtures/poolTasks.ts"
import { blockFlags, eventLoopTurn, eventually, release, samples, withPool } from "./helpers.ts"

describe("pool dispatch", () => {
  it.effect("records one queue wait per task, even when a thread's death sends it again", () =>
    withPool({ name: "dispatch-queue-wait", maxWorkers: 1 })(
      Effect.gen(function* () {
        // Run once: a task never measured is not sent ahead.
        yield* Blocking.run(P.threadId, undefined)
        const waits = samples(NodeBlocking.metrics.queueWait, "dispatch-queue-wait")
        const before = yield* waits
        // Sent together: the no-op waits behind the exit, and runs again on a new thread.
        const [died] = yield* Effect.all([Effect.flip(Blocking.run(P.exit, 3)), Blocking.run(P.threadId, undefined)], {
          concurrency: "unbounded"
        })
        assert.strictEqual(died._tag, "WorkerDiedError")
        assert.strictEqual((yield* waits) - before, 2)
      })
    )
  )

  it.effect("runs concurrent calls of a task it has never measured on as many threads, on a fresh pool", () =>
    withPool({ maxWorkers: 2 })(
      Effect.gen(function* () {
        const flags = yield* Effect.all([blockFlags, blockFlags])
        // Each blocks its thread until released: run on one thread, the second would start only
        // once the first is released.
        const calls = yield* Effect.forEach(flags, (f) =>
          Effect.forkChild(Blocking.run(P.block, f.buffer as SharedArrayBuffer))
        )
        const started = () => flags.every((f) => Atomics.load(f, 0) === 1)
        assert.isTrue(yield* eventually(started), "the second call waited behind the first on one thread")
        for (const f of flags) release(f)
        yield* Fiber.joinAll(calls)
      })
    )
  )

  it.effect("sends calls of a task measured as short ahead to a busy thread, not those of one never measured", () =>
    // A task a thread takes at once does not wait in the queue: with room for one, the call after
    // the one sent ahead waits, and the next is refused.
    withPool({ maxWorkers: 1, minWorkers: 1, waitForWorkers: true, maxQueue: 1, queueFull: "fail" })(
      Effect.gen(function* () {
        const marks = new SharedArrayBuffer(16)
        /** `n` calls of `P.mark` while `P.block` holds the thread; what each ended with. */
        const burst = (n: number) =>
          Effect.gen(function* () {
            const flags = yield* blockFlags
            const blocked = yield* Effect.forkChild(Blocking.run(P.block, flags.buffer as SharedArrayBuffer))
            yield* waitForFlag(flags, 0)
            const calls = yield* Effect.forEach(
              Array.from({ length: n }, (_, index) => index),
              (index) => Effect.forkChild(Effect.result(Blocking.run(P.mark, { shared: marks, index })))
            )
            // Every call has been submitted while the thread is blocked.
            yield* eventLoopTurn
            release(flags)
            yield* Fiber.join(blocked)
            const results = yield* Fiber.joinAll(calls)
            return results.map((result) => (result._tag === "Success" ? "ran" : result.failure._tag))
          })
        assert.deepStrictEqual(yield* burst(2), ["ran", "QueueFullError"], "never measured: the first one waits")
        assert.deepStrictEqual(
          yield* burst(3),
          ["ran", "ran", "QueueFullError"],
          "measured as short: the first one is sent ahead"
        )
      })
    )
  )
})
