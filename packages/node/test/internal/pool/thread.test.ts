import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { waitForFlag } from "../../../../core/test/shared/blockingSuite.ts"
import * as P from "../../fixtures/poolTasks.ts"
import { blockFlags, eventLoopTurn, release, withPool } from "./helpers.ts"

describe("pool threads", () => {
  // Found by review: a thread's bootstrap (an eval'd script) left Node's CommonJS globals on
  // globalThis (`__filename` = "[worker eval]"): task modules saw them, and code that checks for
  // them took its CommonJS path (@effect/platform-node's http module threw at import, so a task
  // module reaching it, or a pool started from a task, failed with TaskNotFoundError).
  it.effect("runs task modules without the CommonJS globals an ES module never has", () =>
    withPool({ maxWorkers: 1 })(
      Effect.gen(function* () {
        const seen = yield* Blocking.run(P.commonJsGlobals, undefined)
        assert.deepStrictEqual(seen, {
          require: "undefined",
          module: "undefined",
          exports: "undefined",
          __filename: "undefined",
          __dirname: "undefined"
        })
      })
    )
  )

  it.effect("keeps minWorkers threads when the idle timers of several fire at once", () =>
    withPool({ minWorkers: 1, maxWorkers: 3, maxTasksPerWorker: 1, idleTimeout: "10 seconds" })(
      Effect.gen(function* () {
        // Three blocked tasks grow the pool to three threads (one task per thread at a time).
        const flags = yield* Effect.all([blockFlags, blockFlags, blockFlags])
        const blocked = yield* Effect.forEach(flags, (f) =>
          Effect.forkChild(Blocking.run(P.block, f.buffer as SharedArrayBuffer))
        )
        for (const f of flags) yield* waitForFlag(f, 0)
        for (const f of flags) release(f)
        yield* Fiber.joinAll(blocked)
        const ids = yield* Effect.forEach([1, 2, 3], () => Blocking.run(P.threadId, undefined), {
          concurrency: "unbounded"
        })
        assert.strictEqual(new Set(ids).size, 3)
        yield* TestClock.adjust("10 seconds")
        // The idle timers' callbacks run.
        yield* eventLoopTurn
        // A new thread would have a new id: the task runs on the thread minWorkers kept.
        assert.include(ids, yield* Blocking.run(P.threadId, undefined))
      })
    )
  )
})
