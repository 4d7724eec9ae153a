import { ClusterBlocking } from "@volley/cluster"
import { Blocking } from "@volley/core"
import { Effect, Schema } from "effect"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import * as Tasks from "./fixtures/tasks.ts"
import { unknown } from "./fixtures/unregistered.ts"
import { startCluster, type TestCluster } from "./support/cluster.ts"

let cluster: TestCluster

beforeAll(async () => {
  cluster = await startCluster({ runners: 2 })
}, 90_000)

afterAll(() => cluster?.dispose(), 60_000)

const run = <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor>) =>
  cluster.client.runPromise(Effect.provide(effect, ClusterBlocking.layer({ buckets: 16 })))

describe("ClusterBlocking", () => {
  describe("layer", () => {
    it("runs Blocking.run calls on the runners' worker threads, spread over the runners", async () => {
      const results = await run(
        Effect.forEach(
          Array.from({ length: 40 }, (_, i) => i),
          (n) => Blocking.run(Tasks.square, n),
          {
            concurrency: 40
          }
        )
      )
      assert.deepStrictEqual(
        results.map((r) => r.square),
        Array.from({ length: 40 }, (_, i) => i * i)
      )
      // Worker threads share their runner's pid: two pids, neither ours, means both runners ran calls.
      const pids = new Set(results.map((r) => r.pid))
      assert.strictEqual(pids.size, 2)
      assert.isFalse(pids.has(process.pid))
      const runnerPids = new Set(cluster.runners.map((runner) => runner.child().pid))
      for (const pid of pids) assert.isTrue(runnerPids.has(pid))
    }, 30_000)

    it("returns a task's typed failure as it is", async () => {
      const error = await run(Effect.flip(Blocking.run(Tasks.even, 3)))
      assert.instanceOf(error, Tasks.Odd)
      assert.strictEqual((error as Tasks.Odd).n, 3)
      assert.strictEqual(await run(Blocking.run(Tasks.even, 4)), 4)
    }, 30_000)

    it("fails with TaskNotFoundError for a task no runner registered", async () => {
      const error = await run(Effect.flip(Blocking.run(unknown, 1)))
      assert.strictEqual(error._tag, "TaskNotFoundError")
      assert.include(error.message, "unknown")
      assert.include(error.message, "unregistered.ts")
    }, 30_000)

    it("fails with TaskNotFoundError for a task without a module URL, without sending it", async () => {
      const local = Blocking.task({
        name: "local",
        payload: Tasks.square.payload,
        success: Tasks.square.payload,
        handler: (n: number) => n
      })
      const error = await run(Effect.flip(Blocking.run(local, 1)))
      assert.strictEqual(error._tag, "TaskNotFoundError")
    }, 30_000)

    it("fails with InvalidPayloadError naming the field for a payload JSON cannot store, without sending it", async () => {
      const bytes = Blocking.task({
        module: import.meta.url,
        name: "bytes",
        payload: Schema.Struct({ name: Schema.String, data: Schema.Uint8Array }),
        success: Schema.Number,
        handler: ({ data }) => data.length
      })
      const error = await run(Effect.flip(Blocking.run(bytes, { name: "x", data: new Uint8Array([1, 2]) })))
      assert.strictEqual(error._tag, "InvalidPayloadError")
      assert.include(error.message, "payload.data (Uint8Array)")
    }, 30_000)
  })
})
