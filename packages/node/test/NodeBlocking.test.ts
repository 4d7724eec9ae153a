import { execFile } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { ConfigProvider, Effect, Exit, Fiber, Layer, Metric, Schema, Tracer } from "effect"
import { TestClock } from "effect/testing"
import * as T from "../../core/test/fixtures/blockingTasks.ts"
import { blockingSuite, waitForFlag } from "../../core/test/shared/blockingSuite.ts"
import * as P from "./fixtures/poolTasks.ts"

blockingSuite("worker threads", NodeBlocking.layer({ maxWorkers: 2 }))

const withPool =
  (options: NodeBlocking.Options) =>
  <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor>) =>
    Effect.scoped(
      Effect.flatMap(NodeBlocking.make(options), (executor) =>
        Effect.provideService(effect, Blocking.BlockingExecutor, executor)
      )
    )

const flags = (n = 4) => new Int32Array(new SharedArrayBuffer(4 * n))
const shared = (f: Int32Array) => f.buffer as SharedArrayBuffer
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url)
const counterValue = (metric: Metric.Metric<number, { readonly count: number | bigint }>) =>
  Effect.map(Metric.value(metric), (state) => Number(state.count))

describe("NodeBlocking", () => {
  describe("layer", () => {
    it.effect(
      "fails with InvalidOptionsError when maxWorkers or maxQueue < 1, minWorkers > maxWorkers or a policy is unknown",
      () =>
        Effect.gen(function* () {
          const tooSmall = yield* Effect.flip(Layer.build(NodeBlocking.layer({ maxWorkers: 0 })).pipe(Effect.scoped))
          assert.strictEqual(tooSmall._tag, "InvalidOptionsError")
          assert.include(tooSmall.message, "maxWorkers: must be an integer >= 1, got 0")
          const inverted = yield* Effect.flip(
            Layer.build(NodeBlocking.layer({ minWorkers: 3, maxWorkers: 2 })).pipe(Effect.scoped)
          )
          assert.include(inverted.message, "minWorkers")
          const noQueue = yield* Effect.flip(Layer.build(NodeBlocking.layer({ maxQueue: 0 })).pipe(Effect.scoped))
          assert.include(noQueue.message, "maxQueue: must be an integer >= 1, got 0")
          const unknownPolicy = yield* Effect.flip(
            Layer.build(NodeBlocking.layer({ queueFull: "drop" as "fail" })).pipe(Effect.scoped)
          )
          assert.include(unknownPolicy.message, `queueFull: must be one of "wait", "fail", got "drop"`)
        })
    )

    it.effect("reads its options from Config in layerConfig", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(Layer.build(NodeBlocking.layerConfig).pipe(Effect.scoped))
        assert.strictEqual(error._tag, "InvalidOptionsError")
        assert.include(error.message, "maxWorkers")
      }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { BLOCKING_MAX_WORKERS: "0" } }))))
    )
  })

  describe("run", () => {
    it.effect(
      "fails with TaskNotFoundError for a missing module, an unexported task or no module URL, and keeps working",
      () =>
        withPool({ maxWorkers: 1 })(
          Effect.gen(function* () {
            const missing = Blocking.task({
              module: fixture("doesNotExist.ts"),
              name: "ghost",
              payload: Schema.Void,
              success: Schema.Void,
              handler: () => undefined
            })
            const unexported = Blocking.task({ ...missing, module: fixture("unexported.ts"), name: "secret" })
            const nowhere = Blocking.task({ ...missing, module: undefined, name: "nowhere" })
            for (const task of [missing, unexported, nowhere]) {
              const error = yield* Effect.flip(Blocking.run(task, undefined))
              assert.strictEqual(error._tag, "TaskNotFoundError", task.name)
            }
            const error = yield* Effect.flip(Blocking.run(unexported, undefined))
            assert.include(error.message, `no task named "secret"`)
            assert.strictEqual(yield* Blocking.run(T.square, 5), 25)
          })
        )
    )
  })

  describe("queue", () => {
    it.effect("removes a queued task whose caller is interrupted: it never runs", () =>
      withPool({ maxWorkers: 1, maxTasksPerWorker: 1 })(
        Effect.gen(function* () {
          const f = flags()
          const blocker = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* waitForFlag(f, 0)
          const queued = yield* Effect.forkChild(Blocking.run(P.mark, { shared: shared(f), index: 3 }))
          yield* Fiber.interrupt(queued)
          Atomics.store(f, 1, 1)
          Atomics.notify(f, 1)
          yield* Fiber.join(blocker)
          yield* Blocking.run(P.threadId, undefined)
          assert.strictEqual(Atomics.load(f, 3), 0)
        })
      )
    )

    it.effect("fails fast with QueueFullError when no thread can take a task and maxQueue tasks wait", () =>
      withPool({ minWorkers: 2, maxWorkers: 2, maxTasksPerWorker: 1, maxQueue: 1, queueFull: "fail" })(
        Effect.gen(function* () {
          // Both threads ready and idle: a blocked task on each, released together.
          const f = flags()
          const g = flags()
          const blockers = [yield* Effect.forkChild(Blocking.run(P.block, shared(f)))]
          yield* waitForFlag(f, 0)
          blockers.push(yield* Effect.forkChild(Blocking.run(P.block, shared(g))))
          yield* waitForFlag(g, 0)
          for (const flag of [f, g]) {
            Atomics.store(flag, 1, 1)
            Atomics.notify(flag, 1)
          }
          yield* Fiber.joinAll(blockers)
          // Submitted in one go: one task per thread, one in the queue, the fourth refused.
          const results = yield* Effect.forEach([1, 2, 3, 4], (n) => Effect.result(Blocking.run(T.square, n)), {
            concurrency: "unbounded"
          })
          assert.deepStrictEqual(
            results.map((r) => (r._tag === "Success" ? r.success : r.failure._tag)),
            [1, 4, 9, "QueueFullError"]
          )
        })
      )
    )

    it.effect("suspends the caller until there is room when queueFull is wait", () =>
      withPool({ maxWorkers: 1, maxTasksPerWorker: 1, maxQueue: 1 })(
        Effect.gen(function* () {
          const f = flags()
          const blocker = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* waitForFlag(f, 0)
          const results = yield* Effect.forkChild(
            Effect.forEach([2, 3, 4], (n) => Blocking.run(T.square, n), { concurrency: "unbounded" })
          )
          Atomics.store(f, 1, 1)
          Atomics.notify(f, 1)
          yield* Fiber.join(blocker)
          assert.deepStrictEqual(yield* Fiber.join(results), [4, 9, 16])
        })
      )
    )

    it.effect("fails with TaskTimeoutError (queued) when a task waits longer than queueTimeout", () =>
      withPool({ maxWorkers: 1, maxTasksPerWorker: 1 })(
        Effect.gen(function* () {
          const f = flags()
          const blocker = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* waitForFlag(f, 0)
          const queued = yield* Effect.forkChild(
            Blocking.run(P.mark, { shared: shared(f), index: 3 }, { queueTimeout: "1 second" })
          )
          yield* Effect.yieldNow
          yield* TestClock.adjust("1 second")
          const error = yield* Effect.flip(Fiber.join(queued))
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.phase, "queued")
          Atomics.store(f, 1, 1)
          Atomics.notify(f, 1)
          yield* Fiber.join(blocker)
          yield* Blocking.run(P.threadId, undefined)
          assert.strictEqual(Atomics.load(f, 3), 0)
        })
      )
    )
  })

  describe("cancellation", () => {
    it.effect(
      "returns at once when a blocked task is interrupted, and replaces its thread after the grace period",
      () =>
        withPool({ maxWorkers: 1, gracePeriod: "500 millis" })(
          Effect.gen(function* () {
            const before = yield* Blocking.run(P.threadId, undefined)
            const f = flags()
            const fiber = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
            yield* waitForFlag(f, 0)
            yield* Fiber.interrupt(fiber)
            assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(fiber)))
            const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
            yield* TestClock.adjust("500 millis")
            const after = yield* Fiber.join(next)
            assert.notStrictEqual(after, before)
            assert.strictEqual(Atomics.load(f, 2), 0, "the blocked handler never finished")
          })
        )
    )

    it.effect("terminates the thread of a blocked task that times out and fails it with TaskTimeoutError", () =>
      withPool({ maxWorkers: 1, gracePeriod: "100 millis", timeout: "5 seconds" })(
        Effect.gen(function* () {
          const before = yield* Blocking.run(P.threadId, undefined)
          const f = flags()
          const fiber = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* waitForFlag(f, 0)
          yield* TestClock.adjust("5 seconds")
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.timeoutMillis, 5000)
          yield* TestClock.adjust("100 millis")
          assert.notStrictEqual(yield* Blocking.run(P.threadId, undefined), before)
        })
      )
    )
  })

  describe("crash recovery", () => {
    it.effect("fails only the task whose thread calls process.exit; 100 tasks in flight all complete", () =>
      withPool({ maxWorkers: 2 })(
        Effect.gen(function* () {
          const crashesBefore = yield* counterValue(NodeBlocking.metrics.crashes)
          const others = yield* Effect.forkChild(
            Effect.forEach(
              Array.from({ length: 100 }, (_, n) => n),
              (n) => Blocking.run(P.slowSquare, { n, millis: 1 }),
              { concurrency: "unbounded" }
            )
          )
          const crash = yield* Effect.flip(Blocking.run(P.exit, 3))
          assert.strictEqual(crash._tag, "WorkerDiedError")
          assert.strictEqual(crash._tag === "WorkerDiedError" && crash.exitCode, 3)
          assert.deepStrictEqual(
            yield* Fiber.join(others),
            Array.from({ length: 100 }, (_, n) => n * n)
          )
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashesBefore, 1)
        })
      )
    )

    it.effect("fails a task that exceeds the heap limit with WorkerDiedError (out-of-memory) and keeps working", () =>
      withPool({ maxWorkers: 1, resourceLimits: { maxOldGenerationSizeMb: 48 } })(
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(P.hog, undefined))
          assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "out-of-memory")
          assert.strictEqual(yield* Blocking.run(T.square, 4), 16)
        })
      )
    )

    it.effect("trips the crash-loop breaker when a module kills every thread that imports it", () =>
      withPool({ maxWorkers: 1 })(
        Effect.gen(function* () {
          const doomed = Blocking.task({
            module: fixture("exitOnImport.ts"),
            name: "doomed",
            payload: Schema.Void,
            success: Schema.Void,
            handler: () => undefined
          })
          const reasons: Array<string> = []
          for (let i = 0; i < 5; i++) {
            const error = yield* Effect.flip(Blocking.run(doomed, undefined))
            reasons.push(error._tag === "WorkerDiedError" ? error.reason : error._tag)
          }
          assert.deepStrictEqual(reasons, ["exit", "exit", "exit", "crash-loop", "crash-loop"])
          assert.strictEqual(yield* Blocking.run(T.square, 6), 36)
        })
      )
    )
  })

  describe("idle threads", () => {
    it.effect("terminates a thread idle for idleTimeout and starts a new one when work arrives", () =>
      withPool({ maxWorkers: 1, idleTimeout: "10 seconds" })(
        Effect.gen(function* () {
          const first = yield* Blocking.run(P.threadId, undefined)
          yield* TestClock.adjust("9 seconds")
          assert.strictEqual(yield* Blocking.run(P.threadId, undefined), first, "still warm before the timeout")
          yield* TestClock.adjust("10 seconds")
          assert.notStrictEqual(yield* Blocking.run(P.threadId, undefined), first)
        })
      )
    )
  })

  describe("observability", () => {
    it.effect("wraps each run in a span, a child of the caller's, naming the task and its thread", () =>
      withPool({ maxWorkers: 1 })(
        Effect.gen(function* () {
          const spans: Array<Tracer.Span> = []
          const recording = Tracer.make({
            span(options) {
              const span = Tracer.nativeTracer.span(options)
              spans.push(span)
              return span
            }
          })
          const thread = yield* Blocking.run(P.threadId, undefined).pipe(
            Effect.withSpan("caller"),
            Effect.provideService(Tracer.Tracer, recording)
          )
          const caller = spans.find((span) => span.name === "caller")!
          const task = spans.find((span) => span.name === "Blocking.run threadId")!
          assert.strictEqual(task.traceId, caller.traceId)
          assert.strictEqual(task.parent._tag === "Some" && task.parent.value.spanId, caller.spanId)
          assert.strictEqual(task.attributes.get("volley.blocking.thread_id"), thread)
          assert.isNumber(task.attributes.get("volley.blocking.run_ms"))
        })
      )
    )

    it.effect("records run and queue-wait times per task and utilisation", () =>
      withPool({ maxWorkers: 2 })(
        Effect.gen(function* () {
          const runsBefore = yield* counterValue(NodeBlocking.metrics.runTime)
          const waitsBefore = yield* counterValue(NodeBlocking.metrics.queueWait)
          yield* Effect.forEach([1, 2, 3, 4, 5], (n) => Blocking.run(T.square, n), { concurrency: 5 })
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.runTime)) - runsBefore, 5)
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.queueWait)) - waitsBefore, 5)
          const utilization = yield* Metric.value(NodeBlocking.metrics.utilization)
          assert.isAtLeast(utilization.value, 0)
          assert.isAtMost(utilization.value, 1)
        })
      )
    )
  })

  describe("shutdown", () => {
    it.effect("drains queued tasks before closing by default", () =>
      Effect.gen(function* () {
        const f = flags()
        yield* withPool({ maxWorkers: 1, maxTasksPerWorker: 1 })(
          Effect.gen(function* () {
            yield* Effect.forkDetach(Blocking.run(P.mark, { shared: shared(f), index: 0 }))
            yield* Effect.forkDetach(Blocking.run(P.mark, { shared: shared(f), index: 1 }))
            yield* Effect.yieldNow
          })
        )
        assert.deepStrictEqual([Atomics.load(f, 0), Atomics.load(f, 1)], [1, 1])
      })
    )

    it.effect("fails queued and running tasks with ExecutorShutDownError when shutdown is cancel", () =>
      Effect.gen(function* () {
        const f = flags()
        const fibers = yield* withPool({ maxWorkers: 1, maxTasksPerWorker: 1, shutdown: "cancel" })(
          Effect.gen(function* () {
            const running = yield* Effect.forkDetach(Blocking.run(P.block, shared(f)))
            yield* waitForFlag(f, 0)
            const queued = yield* Effect.forkDetach(Blocking.run(P.mark, { shared: shared(f), index: 3 }))
            yield* Effect.yieldNow
            return [running, queued] as const
          })
        )
        for (const fiber of fibers) {
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(error._tag, "ExecutorShutDownError")
        }
        assert.strictEqual(Atomics.load(f, 3), 0)
        assert.strictEqual(Atomics.load(f, 2), 0, "the blocked thread was terminated, not waited for")
      })
    )

    it.live("leaves no thread behind: a process whose pool had a blocked thread exits by itself", () =>
      Effect.promise(
        () =>
          new Promise<string>((resolve, reject) =>
            execFile(
              process.execPath,
              ["--conditions=source", new URL("./fixtures/closeAndExit.ts", import.meta.url).pathname],
              { timeout: 20_000 },
              (error, stdout) => (error ? reject(error) : resolve(stdout))
            )
          )
      ).pipe(Effect.map((stdout) => assert.deepStrictEqual(JSON.parse(stdout), { closed: true, stuck: "failed" })))
    )
  })
})
