import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as T from "../../../../core/test/fixtures/blockingTasks.ts"
import { realSleep, samples, withPool } from "./helpers.ts"

describe("pool recovery", () => {
  it.effect("keeps minWorkers from restarting threads while the start-up breaker is open, then tries once more", () =>
    // 5 MB of heap is too little for a thread to start: every thread dies before it is ready.
    withPool({
      name: "recovery-breaker",
      minWorkers: 1,
      maxWorkers: 1,
      resourceLimits: { maxOldGenerationSizeMb: 5 },
      crashLoop: { deaths: 2, cooldown: "1 minute" }
    })(
      Effect.gen(function* () {
        const crashes = samples(NodeBlocking.metrics.crashes, "recovery-breaker")
        for (let i = 0; i < 500 && (yield* crashes) < 2; i++) yield* realSleep(10)
        // Without the breaker check a doomed thread would start every few tens of ms.
        yield* realSleep(300)
        assert.strictEqual(yield* crashes, 2, "no thread started while the breaker is open")
        yield* TestClock.adjust("1 minute")
        const error = yield* Effect.flip(Blocking.run(T.square, 2))
        assert.strictEqual(error instanceof Blocking.WorkerDiedError && error.reason, "crash-loop")
        yield* realSleep(300)
        assert.strictEqual(yield* crashes, 3, "one more thread after the cool-down re-opened the breaker")
      })
    )
  )
})
