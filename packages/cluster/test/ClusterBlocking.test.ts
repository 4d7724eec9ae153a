import { ClusterBlocking, ClusterRunner } from "@volley/cluster"
import { Blocking } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer, ManagedRuntime, Option, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import * as Tasks from "./fixtures/tasks.ts"
import { unknown } from "./fixtures/unregistered.ts"
import { startCluster, type TestCluster } from "./support/cluster.ts"
import { freePort } from "./support/ports.ts"

let cluster: TestCluster

beforeAll(async () => {
  cluster = await startCluster({ runners: 2 })
}, 90_000)

afterAll(() => cluster?.dispose(), 60_000)

// support/cluster.ts's `balanced` counts the runners of the whole server, the cluster's included:
// this waits for the one runner of the current database to hold all 300 shards.
const holdsEveryShard = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.repeat(
    sql<{ shards: string }>`select count(*) as shards from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and a.application_name like 'volley-runner %' and a.datname = current_database()`,
    { until: ([row]) => Number(row?.shards) >= 300, schedule: Schedule.spaced("200 millis") }
  ).pipe(Effect.timeout("30 seconds"))
)

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

    it("fails with HandlerError describing a thrown non-Error, as it does for an Error (a MalformedMessage defect before)", async () => {
      // Its reply has no stack (`stack: undefined`), which Effect's cluster could not store as JSON.
      const exit = await run(Effect.exit(Blocking.run(Tasks.throwsObject, 1).pipe(Effect.timeout("20 seconds"))))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isSuccess(exit)) return
      const error = Cause.findErrorOption(exit.cause)
      assert.isTrue(Option.isSome(error), `a typed failure, not ${Cause.pretty(exit.cause).slice(0, 400)}`)
      if (Option.isNone(error)) return
      assert.instanceOf(error.value, Blocking.HandlerError)
      const handler = error.value as Blocking.HandlerError
      assert.deepStrictEqual(
        [handler.errorName, handler.errorMessage, handler.remoteStack],
        ["object", "{ code: 1, fn: [function answer] }", undefined]
      )
      assert.strictEqual(await run(Blocking.run(Tasks.even, 2)), 2, "the runners go on")
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

    it("fails with InvalidPayloadError for a circular payload, not a stack overflow", async () => {
      const echo = Blocking.task({
        module: import.meta.url,
        name: "echo",
        payload: Schema.Unknown,
        success: Schema.Unknown,
        handler: (value: unknown) => value
      })
      const loop: Record<string, unknown> = { name: "loop" }
      loop.self = loop
      const error = await run(Effect.flip(Blocking.run(echo, loop)))
      assert.strictEqual(error._tag, "InvalidPayloadError")
      assert.include(error.message, "payload.self (circular)")
    }, 30_000)
  })

  describe("layer, with a runner in this process", () => {
    // Tasks of this file's runner: it runs them inline (nothing imports this module), and
    // `received` records what its executor was asked, as a user's own executor would see it.
    class Bytes extends Schema.TaggedError<Bytes>()("Bytes", { data: Schema.Uint8Array }) {}
    const fill = Blocking.task({
      module: import.meta.url,
      name: "fill",
      payload: Schema.Number,
      success: Schema.Uint8Array,
      handler: (n: number) => new Uint8Array(n).fill(7)
    })
    const refuse = Blocking.task({
      module: import.meta.url,
      name: "refuse",
      payload: Schema.Number,
      success: Schema.Number,
      failure: Bytes,
      handler: (n: number): number => {
        throw new Bytes({ data: new Uint8Array(n) })
      }
    })
    const double = Blocking.task({
      module: import.meta.url,
      name: "double",
      payload: Schema.Number,
      success: Schema.Number,
      handler: (n: number) => n * 2
    })
    const text = Blocking.task({
      module: import.meta.url,
      name: "text",
      payload: Schema.Number,
      success: Schema.String,
      handler: (n: number) => "x".repeat(n)
    })
    const length = Blocking.task({
      module: import.meta.url,
      name: "length",
      payload: Schema.String,
      success: Schema.Number,
      handler: (s: string) => s.length
    })
    const keys = Blocking.task({
      module: import.meta.url,
      name: "keys",
      payload: Schema.Unknown,
      success: Schema.Array(Schema.String),
      handler: (value: unknown) => Object.keys(value as object)
    })
    const received: Array<Blocking.Request> = []
    const recording = Layer.effect(
      Blocking.BlockingExecutor,
      Effect.map(Blocking.BlockingExecutor, (inline) =>
        Blocking.BlockingExecutor.of({
          execute: (request) => {
            received.push(request)
            return inline.execute(request)
          }
        })
      )
    ).pipe(Layer.provide(Blocking.layerInline))

    let runner: ManagedRuntime.ManagedRuntime<ClusterRunner.ClusterRunnerServices, unknown>
    let client: ManagedRuntime.ManagedRuntime<Blocking.BlockingExecutor | ClusterRunner.ClusterRunnerServices, unknown>

    beforeAll(async () => {
      const url = await cluster.postgres.createDatabase("local")
      runner = ManagedRuntime.make(
        ClusterBlocking.layerRunner({ tasks: [fill, refuse, double, text, length, keys] }).pipe(
          Layer.provide(recording),
          Layer.provideMerge(ClusterRunner.layer({ port: await freePort(), database: { url }, timings: "fast" })),
          Layer.provide(NodeHttpClient.layer())
        )
      )
      await runner.runPromise(Effect.void)
      client = ManagedRuntime.make(
        ClusterBlocking.layer().pipe(
          Layer.provideMerge(ClusterRunner.layerClient({ database: { url }, timings: "fast" }))
        )
      )
      await client.runPromise(holdsEveryShard)
    }, 90_000)

    afterAll(async () => {
      await client?.dispose().catch(() => undefined)
      await runner?.dispose().catch(() => undefined)
    }, 60_000)

    it("fails with InvalidResultError naming the field for a result or typed failure JSON cannot store", async () => {
      // The reply is stored as JSON: bytes reached the client as a reply it could not decode (a
      // defect, MalformedMessage), though the task had run.
      const result = await client.runPromise(Effect.flip(Blocking.run(fill, 3).pipe(Effect.timeout("20 seconds"))))
      assert.strictEqual(result._tag, "InvalidResultError")
      assert.include(result.message, "result (Uint8Array)")
      const failure = await client.runPromise(Effect.flip(Blocking.run(refuse, 3).pipe(Effect.timeout("20 seconds"))))
      assert.strictEqual(failure._tag, "InvalidResultError")
      assert.include(failure.message, "failure.data (Uint8Array)")
    }, 60_000)

    it("sends a payload as JSON gives it back: an object's undefined fields are dropped (a MalformedMessage defect before)", async () => {
      const sent = await client.runPromise(
        Blocking.run(keys, { a: undefined, b: 1, c: [1, { d: undefined }] }).pipe(Effect.timeout("20 seconds"))
      )
      assert.deepStrictEqual(sent, ["b", "c"])
    }, 60_000)

    it("refuses a payload or a reply too large for one stored message, typed, and the runner goes on", async () => {
      // A message over 16 MiB was stored, then every read of the runner's messages failed: that
      // call and every later one waited for good.
      const sixteen = 16 * 1024 * 1024
      const payload = await client.runPromise(Effect.flip(Blocking.run(length, "x".repeat(sixteen))))
      assert.strictEqual(payload._tag, "InvalidPayloadError")
      assert.include(payload.message, "the payload is 16.0 MiB as JSON")
      const reply = await client.runPromise(Effect.flip(Blocking.run(text, sixteen).pipe(Effect.timeout("20 seconds"))))
      assert.strictEqual(reply._tag, "InvalidResultError")
      assert.include(reply.message, "the reply is 16.0 MiB as JSON")
      assert.strictEqual(await client.runPromise(Blocking.run(length, "x".repeat(1024 * 1024))), 1024 * 1024)
      assert.strictEqual(await client.runPromise(Blocking.run(double, 21).pipe(Effect.timeout("20 seconds"))), 42)
    }, 60_000)

    it("gives the runner's executor the call's queueTimeout", async () => {
      received.length = 0
      assert.strictEqual(await client.runPromise(Blocking.run(double, 21, { queueTimeout: "5 seconds" })), 42)
      assert.deepStrictEqual(
        received.map((request) => [request.task.name, request.queueTimeoutMillis]),
        [["double", 5000]]
      )
    }, 30_000)
  })

  describe("layer, with no runner", () => {
    let client: ManagedRuntime.ManagedRuntime<Blocking.BlockingExecutor, unknown>

    beforeAll(async () => {
      const url = await cluster.postgres.createDatabase("empty")
      client = ManagedRuntime.make(
        ClusterBlocking.layer().pipe(Layer.provide(ClusterRunner.layerClient({ database: { url }, timings: "fast" })))
      )
      await client.runPromise(Effect.void)
    }, 60_000)

    afterAll(() => client?.dispose().catch(() => undefined), 30_000)

    it("fails a call no runner takes with TaskTimeoutError (queued) after queueTimeout + timeout", async () => {
      // Stored calls wait for a runner; queueTimeout is what bounds that (it was ignored: the
      // call waited for ever). The client cannot see a call start, so the bound adds `timeout`.
      const started = Date.now()
      const error = await client.runPromise(
        Effect.flip(
          Blocking.run(Tasks.square, 3, { queueTimeout: "300 millis", timeout: "700 millis" }).pipe(
            Effect.timeout("10 seconds")
          )
        )
      )
      assert.strictEqual(error._tag, "TaskTimeoutError")
      assert.deepInclude(error, { phase: "queued", timeoutMillis: 300 })
      assert.isAtLeast(Date.now() - started, 1_000)
    }, 30_000)
  })
})
