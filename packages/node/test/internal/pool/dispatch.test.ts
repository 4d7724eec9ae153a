import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect } from "effect"
import * as P from "../../fixtures/poolTasks.ts"
import { samples, withPool } from "./helpers.ts"

describe("pool dispatch", () => {
  it.effect("records one queue wait per task, even when a thread's death sends it again", () =>
    withPool({ name: "dispatch-queue-wait", maxWorkers: 1 })(
      Effect.gen(function* () {
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
})
