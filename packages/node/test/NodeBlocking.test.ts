import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { availableParallelism, tmpdir } from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { assert, describe, it, layer } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import {
  Cause,
  ConfigProvider,
  Effect,
  Exit,
  Fiber,
  Layer,
  Metric,
  Option,
  Result,
  Schema,
  Scope,
  Tracer
} from "effect"
import { TestClock } from "effect/testing"
import * as T from "../../core/test/fixtures/blockingTasks.ts"
import { blockingSuite, waitForFlag } from "../../core/test/shared/blockingSuite.ts"
import * as P from "./fixtures/poolTasks.ts"
import { runFixture } from "./fixtures/run.ts"
import * as S from "./fixtures/sameName.ts"
import * as Strict from "./fixtures/strictExport.ts"

blockingSuite("worker threads", NodeBlocking.layer({ maxWorkers: 2 }))

const withPool =
  (options: NodeBlocking.Options) =>
  <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor | Scope.Scope>) =>
    Effect.scoped(
      Effect.flatMap(NodeBlocking.make(options), (executor) =>
        Effect.provideService(effect, Blocking.BlockingExecutor, executor)
      )
    )

/**
 * One thread taking one task at a time, with a queue of one: a warm pool shared by the tests of a
 * block (each releases what it blocked), so they do not each pay for a thread's start-up.
 */
const onePool = NodeBlocking.layer({ maxWorkers: 1, maxTasksPerWorker: 1, maxQueue: 1 })

const flags = (n = 4) => new Int32Array(new SharedArrayBuffer(4 * n))
const shared = (f: Int32Array) => f.buffer as SharedArrayBuffer
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url)
const counterValue = (metric: Metric.Metric<number, { readonly count: number | bigint }>) =>
  Effect.map(Metric.value(metric), (state) => Number(state.count))
const gaugeValue = (metric: Metric.Metric<number, { readonly value: number | bigint }>) =>
  Effect.map(Metric.value(metric), (state) => Number(state.value))

/** Lets a `P.block` task return. */
const release = (f: Int32Array) => {
  Atomics.store(f, 1, 1)
  Atomics.notify(f, 1)
}

/**
 * Runs `P.block` (which ignores its AbortSignal) and returns once it holds a thread. Its flags:
 * [0] it started, [2] it returned. Released when the scope closes, so a failing test ends
 * instead of waiting on a blocked thread.
 */
const blockAThread = Effect.gen(function* () {
  const f = flags()
  const fiber = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
  yield* waitForFlag(f, 0)
  yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
  return { flags: f, fiber }
})

/** Runs `P.block` released beforehand: it returns at once. */
const runReleasedBlock = Effect.suspend(() => {
  const f = flags()
  release(f)
  return Blocking.run(P.block, shared(f))
})

const realSleep = (millis: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, millis)))

// A call that must not wait for good, bounded by a real timeout (the tests of messages a thread
// cannot read, where a lost answer would leave the call waiting).
const bounded = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.timeout(effect, "10 seconds")
// An array nested `depth` deep: past a few thousand, a small stack cannot deserialize it.
const nestedArrays = (depth: number) => {
  let value: unknown = 0
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

/** One turn of the event loop (no time passes): forked callers have submitted and the pool has dispatched. */
const eventLoopTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/**
 * A task whose module announces each import on a BroadcastChannel (not imported here: only the
 * threads' imports are announced).
 */
const announced = Blocking.task({
  module: fixture("announced.ts"),
  name: "hello",
  payload: Schema.Void,
  success: Schema.Number,
  handler: () => 0
})
const announcedChannel = "volley-test-announced-imports"

/** A task whose module kills every thread that imports it. */
const doomed = Blocking.task({
  module: fixture("exitOnImport.ts"),
  name: "doomed",
  payload: Schema.Void,
  success: Schema.Void,
  handler: () => undefined
})
const doomedReason = Effect.map(Effect.flip(Blocking.run(doomed, undefined)), (error) =>
  error._tag === "WorkerDiedError" ? error.reason : error._tag
)

/** Tasks of a module whose import in a thread ends only when the test says so (see `gatedImports`). */
const gatedModule = fixture("gatedImport.ts")
const gatedChannel = "volley-test-gated-import"
const gatedSquare = Blocking.task({
  module: gatedModule,
  name: "square",
  payload: Schema.Number,
  success: Schema.Number,
  handler: (n) => n * n
})
const gatedBlock = Blocking.task({ ...P.block, module: gatedModule, name: "block" })

/**
 * Counts the imports of gatedImport.ts under way or done in the pool's threads; `finish` lets
 * those under way end. Those left are finished when the scope closes.
 */
const gatedImports = Effect.gen(function* () {
  const channel = new BroadcastChannel(gatedChannel)
  let imports = 0
  channel.onmessage = (event) => {
    if ((event as MessageEvent<unknown>).data === "importing") imports++
  }
  const finish = () => channel.postMessage("finish")
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      finish()
      channel.close()
    })
  )
  return { count: () => imports, finish }
})

/** Polls `done` in real time (10 ms apart, for at most 5 s), running `step` before each look. */
const eventually = <R = never>(done: () => boolean, step: Effect.Effect<void, never, R> = Effect.void) =>
  Effect.gen(function* () {
    for (let i = 0; i < 500 && !done(); i++) {
      yield* step
      yield* realSleep(10)
    }
    return done()
  })

/**
 * The file a native call of `P.waitNatively` waits for: `unblock()` creates it, and the call
 * returns (it does by itself after 10 s); `blocked()` is true once the call has started. The
 * scope's close unblocks it and waits for the call to see the file before it removes the file's
 * directory: removed at once, the call missed the file and held its thread, and the pool's close,
 * those 10 s.
 */
const releaseFile = Effect.gen(function* () {
  const dir = mkdtempSync(join(tmpdir(), "volley-native-wait-"))
  const file = join(dir, "release")
  let unblocked = false
  const unblock = () => {
    if (!unblocked) writeFileSync(file, "")
    unblocked = true
  }
  yield* Effect.addFinalizer(() =>
    Effect.gen(function* () {
      unblock()
      yield* eventually(() => !existsSync(file))
      rmSync(dir, { recursive: true, force: true })
    })
  )
  return { file, unblock, blocked: () => existsSync(`${file}.running`) }
})

/**
 * Runs `P.nativeWait` and returns once its thread is blocked in the native call, which V8 cannot
 * stop; `unblock()` lets the call return (see `releaseFile`).
 */
const nativeBlock = Effect.gen(function* () {
  const { file, unblock, blocked } = yield* releaseFile
  const fiber = yield* Effect.forkChild(Blocking.run(P.nativeWait, file))
  assert.isTrue(yield* eventually(blocked), "the call started")
  return { fiber, unblock }
})

/** A tracer that keeps every span it starts, to assert on them. */
const recordingTracer = () => {
  const spans: Array<Tracer.Span> = []
  const recording = Tracer.make({
    span(options) {
      const span = Tracer.nativeTracer.span(options)
      spans.push(span)
      return span
    }
  })
  return { spans, recording }
}

describe("NodeBlocking", () => {
  describe("layer", () => {
    it.effect("rejects bad sizes, queue and breaker limits, too many tasks sent ahead and unknown policies", () =>
      Effect.gen(function* () {
        const reject = (options: NodeBlocking.Options) =>
          Effect.flip(Layer.build(NodeBlocking.layer(options)).pipe(Effect.scoped))
        const tooSmall = yield* reject({ maxWorkers: 0 })
        assert.strictEqual(tooSmall._tag, "InvalidOptionsError")
        assert.include(tooSmall.message, "maxWorkers: must be an integer >= 1, got 0")
        assert.include((yield* reject({ minWorkers: 3, maxWorkers: 2 })).message, "minWorkers")
        assert.include((yield* reject({ maxQueue: 0 })).message, "maxQueue: must be an integer >= 1, got 0")
        assert.include(
          (yield* reject({ maxTasksPerWorker: 1025 })).message,
          "maxTasksPerWorker: must be at most 1024, got 1025"
        )
        assert.include(
          (yield* reject({ crashLoop: { deaths: 0 } })).message,
          "crashLoop.deaths: must be an integer >= 1, got 0"
        )
        assert.include(
          (yield* reject({ queueFull: "drop" as "fail" })).message,
          `queueFull: must be one of "wait", "fail", got "drop"`
        )
        // Limits that would abort the whole process instead of failing a thread.
        assert.include(
          (yield* reject({ resourceLimits: { maxOldGenerationSizeMb: -1 } })).message,
          "resourceLimits.maxOldGenerationSizeMb: must be a number >= 4"
        )
        assert.include((yield* reject({ resourceLimits: { stackSizeMb: 0.1 } })).message, "resourceLimits.stackSizeMb")
        assert.include(
          (yield* reject({ resourceLimits: { maxYoungGenerationSizeMb: Number.NaN } })).message,
          "resourceLimits.maxYoungGenerationSizeMb: must be a number > 0"
        )
        assert.include((yield* reject({ timeout: 0 })).message, "timeout: must be a finite duration > 0")
        // From JavaScript, values of another type.
        assert.include(
          (yield* reject({ resourceLimits: "x" as unknown as NodeBlocking.Options["resourceLimits"] })).message,
          "resourceLimits: must be an object, got x"
        )
        assert.include((yield* reject({ name: 5 as unknown as string })).message, "name: must be a string, got number")
      })
    )

    // Found by a boundary sweep: only floors were checked, and `codeRangeSizeMb: 1e9` aborted the
    // process ("Failed to reserve virtual memory for CodeRange") at the first thread, as
    // `stackSizeMb: 1e300` segfaulted it. Built with no thread started, so nothing crashes here.
    it.effect("rejects resourceLimits large enough to crash the whole process", () =>
      Effect.gen(function* () {
        const reject = (resourceLimits: NodeBlocking.Options["resourceLimits"]) =>
          Effect.flip(Layer.build(NodeBlocking.layer({ minWorkers: 0, resourceLimits })).pipe(Effect.scoped))
        const codeRange = yield* reject({ codeRangeSizeMb: 1e9 })
        assert.strictEqual(codeRange._tag, "InvalidOptionsError")
        assert.strictEqual(
          codeRange.message,
          "Invalid option resourceLimits.codeRangeSizeMb: must be at most 1048576 (larger values can crash the whole process), got 1000000000"
        )
        const stack = yield* reject({ stackSizeMb: 1e300 })
        assert.include(stack.message, "resourceLimits.stackSizeMb: must be at most 1048576")
        // The largest values allowed still build (a stack the OS cannot map fails its thread only).
        yield* Layer.build(
          NodeBlocking.layer({ minWorkers: 0, resourceLimits: { codeRangeSizeMb: 1_048_576, stackSizeMb: 1_048_576 } })
        ).pipe(Effect.scoped)
      })
    )

    // Found by a boundary sweep: options or a crashLoop of another type than an object (a string)
    // were dropped without a word, and `tasks: {}` died with a TypeError (not iterable).
    it.effect("rejects options, crashLoop and tasks of the wrong type with InvalidOptionsError", () =>
      Effect.gen(function* () {
        for (const [options, option] of [
          ["maxWorkers=2", "options"],
          [{ crashLoop: "3" }, "crashLoop"],
          [{ tasks: {} }, "tasks"],
          [{ tasks: T.square }, "tasks"]
        ] as const) {
          const exit = yield* Effect.exit(
            Layer.build(NodeBlocking.layer(options as unknown as NodeBlocking.Options)).pipe(Effect.scoped)
          )
          assert.isTrue(Exit.isFailure(exit) && !Cause.hasDies(exit.cause), option)
          const error = Exit.isFailure(exit) ? (Cause.squash(exit.cause) as { _tag?: string; option?: string }) : {}
          assert.strictEqual(error._tag, "InvalidOptionsError")
          assert.strictEqual(error.option, option)
        }
      })
    )

    it.effect("takes null options from JavaScript as none, for the layer and for a call", () =>
      Effect.gen(function* () {
        const executor = yield* Layer.build(NodeBlocking.layer(null as unknown as NodeBlocking.Options))
        const run = Blocking.run(T.square, 3, null as unknown as Blocking.RunOptions)
        assert.strictEqual(yield* Effect.provide(run, Layer.succeedContext(executor)), 9)
        // A null field is no value too, as with `??` for the others.
        const nulls = { name: null, resourceLimits: null } as unknown as NodeBlocking.Options
        const other = yield* Layer.build(NodeBlocking.layer(nulls))
        assert.strictEqual(yield* Effect.provide(run, Layer.succeedContext(other)), 9)
      }).pipe(Effect.scoped)
    )

    // Found by review: `waitForWorkers: "true"` from JavaScript was taken as false without a word.
    it.effect("rejects a waitForWorkers that is not a boolean", () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(
          Layer.build(NodeBlocking.layer({ waitForWorkers: "true" as unknown as boolean })).pipe(Effect.scoped)
        )
        assert.strictEqual(error._tag, "InvalidOptionsError")
        assert.strictEqual(error.message, 'Invalid option waitForWorkers: must be one of true, false, got "true"')
      })
    )

    it.effect("rejects more than 1024 threads, minWorkers included, before starting any", () =>
      Effect.gen(function* () {
        const reject = (options: NodeBlocking.Options) =>
          Effect.flip(Layer.build(NodeBlocking.layer(options)).pipe(Effect.scoped))
        const huge = yield* reject({ minWorkers: 1e6, maxWorkers: 1e6 })
        assert.strictEqual(huge._tag, "InvalidOptionsError")
        assert.include(huge.message, "maxWorkers: must be at most 1024, got 1000000")
        assert.include((yield* reject({ maxWorkers: 1025 })).message, "maxWorkers: must be at most 1024, got 1025")
        assert.include((yield* reject({ minWorkers: 1025 })).message, "minWorkers: must be <= maxWorkers")
      })
    )

    it.effect("reads its options from Config in layerConfig, validated as layer's", () =>
      Effect.gen(function* () {
        const build = (env: Record<string, string>) =>
          Layer.build(NodeBlocking.layerConfig()).pipe(
            Effect.scoped,
            Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
          )
        yield* build({ VOLLEY_BLOCKING_MAX_WORKERS: "1", VOLLEY_BLOCKING_SHUTDOWN: "cancel" })
        const invalid = yield* Effect.flip(build({ VOLLEY_BLOCKING_MAX_WORKERS: "0" }))
        assert.strictEqual(invalid._tag, "InvalidOptionsError")
        // Each names the variable it came from, as Retry's and NodeHttpClient's layerConfig do.
        assert.include(invalid.message, "maxWorkers")
        assert.include(invalid.message, "(VOLLEY_BLOCKING_MAX_WORKERS)")
        const breaker = yield* Effect.flip(build({ VOLLEY_BLOCKING_CRASH_LOOP_DEATHS: "0" }))
        assert.include(breaker.message, "crashLoop.deaths")
        assert.include(breaker.message, "(VOLLEY_BLOCKING_CRASH_LOOP_DEATHS)")
        const noImport = yield* Effect.flip(build({ VOLLEY_BLOCKING_IMPORT_TIMEOUT: "0 millis" }))
        assert.include(noImport.message, "importTimeout")
        assert.include(noImport.message, "(VOLLEY_BLOCKING_IMPORT_TIMEOUT)")
        const unparsable = yield* Effect.flip(build({ VOLLEY_BLOCKING_QUEUE_FULL: "drop" }))
        assert.strictEqual(unparsable._tag, "ConfigError")
        assert.include(String(unparsable), "QUEUE_FULL")
        const notBoolean = yield* Effect.flip(build({ VOLLEY_BLOCKING_WAIT_FOR_WORKERS: "soon" }))
        assert.include(String(notBoolean), "WAIT_FOR_WORKERS")
        yield* build({ VOLLEY_BLOCKING_MIN_WORKERS: "1", VOLLEY_BLOCKING_WAIT_FOR_WORKERS: "true" })
      })
    )
  })

  describe("run", () => {
    layer(onePool)((it) => {
      it.effect(
        "fails with TaskNotFoundError for a missing module, an unexported task or no module URL, and keeps working",
        () =>
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

      // Found by review: a syntax error in a task's module, or in one it imports, said only
      // "Expression expected", naming neither the file nor the line.
      it.effect("fails with TaskNotFoundError naming the file and line of a syntax error in its module's imports", () =>
        Effect.gen(function* () {
          const dir = mkdtempSync(join(tmpdir(), "volley-syntax-"))
          yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
          writeFileSync(join(dir, "broken.ts"), "export const a = 1\nexport const b = (\n")
          writeFileSync(join(dir, "tasks.ts"), 'import "./broken.ts"\nexport const c = 1\n')
          const task = Blocking.task({
            module: pathToFileURL(join(dir, "tasks.ts")),
            name: "c",
            payload: Schema.Void,
            success: Schema.Void,
            handler: () => undefined
          })
          const error = yield* Effect.flip(Blocking.run(task, undefined))
          assert.strictEqual(error._tag, "TaskNotFoundError")
          assert.include(error.message, `(at ${join(dir, "broken.ts")}:2)`)
        }).pipe(Effect.scoped)
      )

      it.effect(
        "fails with TaskNotFoundError for two different tasks of one module sharing a name, running neither handler",
        () =>
          Effect.gen(function* () {
            // Before, the last export won: running sameA ran sameB's handler and decoded "B1" with sameA's Schemas.
            for (const task of [S.sameA, S.sameB]) {
              const error = yield* Effect.flip(Blocking.run(task, 1))
              assert.instanceOf(error, Blocking.TaskNotFoundError)
              if (error instanceof Blocking.TaskNotFoundError) {
                assert.strictEqual(error.task, "same")
                assert.strictEqual(error.module, fixture("sameName.ts").href)
                assert.strictEqual(error.reason, `the module exports two tasks named "same": give each its own name`)
              }
            }
            // One task exported twice is one task; the module's other tasks still run.
            assert.strictEqual(yield* Blocking.run(S.twice, 4), 8)
            assert.strictEqual(yield* Blocking.run(S.own, 4), 5)
          })
      )

      it.effect("runs the right handler when module#name spellings of two tasks collide", () =>
        withPool({ maxWorkers: 1 })(
          Effect.gen(function* () {
            assert.strictEqual(yield* Blocking.run(P.hashInName, undefined), "a#b")
            assert.strictEqual(yield* Blocking.run(P.hashInModule, undefined), "b")
          })
        )
      )

      it.effect("rejects a payload that fails its Schema at once, without queueing it behind a busy thread", () =>
        Effect.gen(function* () {
          yield* blockAThread
          const fiber = yield* Effect.forkChild(Blocking.run(T.square, "seven" as unknown as number))
          yield* eventLoopTurn
          assert.isDefined(fiber.pollUnsafe(), "it did not wait for the thread")
          assert.strictEqual((yield* Effect.flip(Fiber.join(fiber)))._tag, "InvalidPayloadError")
        })
      )
    })
  })

  describe("queue", () => {
    layer(onePool)((it) => {
      it.effect("removes a queued task whose caller is interrupted: it never runs", () =>
        Effect.gen(function* () {
          const blocked = yield* blockAThread
          const f = flags()
          const queued = yield* Effect.forkChild(Blocking.run(P.mark, { shared: shared(f), index: 0 }))
          yield* Fiber.interrupt(queued)
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          yield* Blocking.run(P.threadId, undefined)
          assert.strictEqual(Atomics.load(f, 0), 0)
        })
      )

      it.effect("suspends the caller until there is room when queueFull is wait", () =>
        Effect.gen(function* () {
          const blocked = yield* blockAThread
          const results = yield* Effect.forkChild(
            Effect.forEach([2, 3, 4], (n) => Blocking.run(T.square, n), { concurrency: "unbounded" })
          )
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          assert.deepStrictEqual(yield* Fiber.join(results), [4, 9, 16])
        })
      )

      it.effect("keeps a caller waiting for room ahead of a later one after a queued task is cancelled", () =>
        Effect.gen(function* () {
          const blocked = yield* blockAThread
          const order: Array<number> = []
          const square = (n: number) => Effect.tap(Blocking.run(T.square, n), () => Effect.sync(() => order.push(n)))
          const queued = yield* Effect.forkChild(square(2))
          const waiting = yield* Effect.forkChild(square(3))
          yield* eventLoopTurn
          // The cancel makes room, and a new caller arrives in the same tick.
          yield* Fiber.interrupt(queued)
          const later = yield* Effect.forkChild(square(4))
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          yield* Fiber.joinAll([waiting, later])
          assert.deepStrictEqual(order, [3, 4])
        })
      )

      it.effect("fails with TaskTimeoutError (queued) when a task waits longer than queueTimeout", () =>
        Effect.gen(function* () {
          const blocked = yield* blockAThread
          const f = flags()
          const queued = yield* Effect.forkChild(
            Blocking.run(P.mark, { shared: shared(f), index: 0 }, { queueTimeout: "1 second" })
          )
          yield* Effect.yieldNow
          yield* TestClock.adjust("1 second")
          const error = yield* Effect.flip(Fiber.join(queued))
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.phase, "queued")
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          yield* Blocking.run(P.threadId, undefined)
          assert.strictEqual(Atomics.load(f, 0), 0)
        })
      )

      it.effect("counts a task's run timeout from when it starts running, not while it waits in the queue", () =>
        Effect.gen(function* () {
          const blocked = yield* blockAThread
          // The task's own default timeout (Blocking.task's `timeout`).
          const timed = Blocking.task({ ...P.block, timeout: "1 second" })
          const f = flags()
          const fiber = yield* Effect.forkChild(Blocking.run(timed, shared(f)))
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          yield* Effect.yieldNow
          yield* TestClock.adjust("5 seconds")
          assert.isUndefined(fiber.pollUnsafe(), "no timeout while queued")
          release(blocked.flags)
          yield* waitForFlag(f, 0)
          yield* TestClock.adjust("999 millis")
          assert.isUndefined(fiber.pollUnsafe())
          yield* TestClock.adjust("1 millis")
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(
            error._tag === "TaskTimeoutError" && `${error.phase} ${error.timeoutMillis}`,
            "running 1000"
          )
        })
      )
    })

    it.effect("fails fast with QueueFullError when no thread can take a task and maxQueue tasks wait", () =>
      withPool({ minWorkers: 2, maxWorkers: 2, maxTasksPerWorker: 1, maxQueue: 1, queueFull: "fail" })(
        Effect.gen(function* () {
          // Both threads ready, then idle.
          const first = yield* blockAThread
          const second = yield* blockAThread
          release(first.flags)
          release(second.flags)
          yield* Fiber.joinAll([first.fiber, second.fiber])
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
  })

  describe("cancellation", () => {
    it.effect(
      "returns at once when a task that ignores its signal is interrupted, and replaces its thread after the grace period",
      () =>
        withPool({ maxWorkers: 1, gracePeriod: "500 millis" })(
          Effect.gen(function* () {
            const before = yield* Blocking.run(P.threadId, undefined)
            const blocked = yield* blockAThread
            const start = performance.now()
            yield* Fiber.interrupt(blocked.fiber)
            // The handler blocks its thread for up to 30 s, and the grace period is on the TestClock,
            // which has not moved: the interrupt waited for neither.
            assert.isBelow(performance.now() - start, 2000)
            assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(blocked.fiber)))
            assert.strictEqual(Atomics.load(blocked.flags, 2), 0, "the handler is still running")
            const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
            yield* TestClock.adjust("500 millis")
            const after = yield* Fiber.join(next)
            assert.notStrictEqual(after, before)
            assert.strictEqual(Atomics.load(blocked.flags, 2), 0, "the blocked handler never finished")
          })
        )
    )

    it.effect("never terminates the thread running the next task when a task that has ended is interrupted", () =>
      withPool({ maxWorkers: 1, minWorkers: 1, gracePeriod: "1 second" })(
        Effect.gen(function* () {
          // Both tasks run once: a task never measured is not sent ahead.
          const warm = flags()
          release(warm)
          yield* Blocking.run(P.countedBlock, shared(warm))
          yield* Blocking.run(P.threadId, undefined)
          const f = flags()
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          // Sent together to the one thread: the first ends at once, and its result is held back
          // in the thread (untimed results travel in batches) while the second blocks the thread.
          const ended = yield* Effect.forkChild(Blocking.run(P.threadId, undefined), { startImmediately: true })
          const blocking = yield* Effect.forkChild(Blocking.run(P.countedBlock, shared(f)), {
            startImmediately: true
          })
          yield* waitForFlag(f, 0)
          // Its caller gives up (a race, an Effect.timeout): the task is not running, nothing to stop.
          yield* Fiber.interrupt(ended)
          yield* TestClock.adjust("1 second")
          yield* eventLoopTurn
          release(f)
          yield* Fiber.join(blocking)
          assert.strictEqual(Atomics.load(f, 3), 1, "the blocking task ran once: its thread was not terminated")
        })
      )
    )

    // Found by review: the tasks sent ahead to a thread the pool terminated stayed with it until it
    // exited, and V8 stops a thread blocked in a native call (execFileSync, a synchronous SQLite
    // query) only once the call returns: they waited that long, with threads free to run them.
    it.effect("runs the tasks sent ahead to a thread it terminates elsewhere, not once the thread exits", () =>
      withPool({ maxWorkers: 2, gracePeriod: "100 millis" })(
        Effect.gen(function* () {
          // Run once: measured as short, the next call is sent ahead to the busy thread.
          yield* Blocking.run(P.threadId, undefined)
          // Unblocked before the pool closes, which waits for the stuck thread to exit.
          const stuck = (yield* nativeBlock).fiber
          const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
          yield* eventLoopTurn
          yield* Fiber.interrupt(stuck)
          // The grace period is over: the pool terminates the thread, which stays in its native call.
          yield* TestClock.adjust("100 millis")
          assert.isTrue(
            yield* eventually(() => next.pollUnsafe() !== undefined),
            "the task waited for the stuck thread"
          )
          assert.isTrue(Exit.isSuccess(yield* Fiber.await(next)))
        })
      )
    )

    it.effect("terminates the thread of a blocked task that times out and fails it with TaskTimeoutError", () =>
      withPool({ maxWorkers: 1, gracePeriod: "100 millis", timeout: "5 seconds" })(
        Effect.gen(function* () {
          const before = yield* Blocking.run(P.threadId, undefined)
          const blocked = yield* blockAThread
          yield* TestClock.adjust("5 seconds")
          const error = yield* Effect.flip(Fiber.join(blocked.fiber))
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.timeoutMillis, 5000)
          yield* TestClock.adjust("100 millis")
          assert.notStrictEqual(yield* Blocking.run(P.threadId, undefined), before)
          assert.strictEqual(Atomics.load(blocked.flags, 2), 0, "the blocked handler never finished")
        })
      )
    )
  })

  describe("threads stuck in a native call", () => {
    /** True once pool `pool`'s series of `gauge` reads `n`, polled in real time. */
    const reads = (gauge: Metric.Gauge<number>, pool: string, n: number) => {
      const series = Metric.withAttributes(gauge, { pool }) as typeof gauge
      let value: number | undefined
      return eventually(
        () => value === n,
        Effect.map(gaugeValue(series), (v) => {
          value = v
        })
      )
    }
    const terminating = NodeBlocking.metrics.terminating

    /** Moves the clock until each call has timed out (its run timeout starts once the pool hears it started), then past the grace period. */
    const timeOut = (calls: ReadonlyArray<{ readonly fiber: Fiber.Fiber<void, { readonly _tag: string }> }>) =>
      Effect.gen(function* () {
        const done = () => calls.every(({ fiber }) => fiber.pollUnsafe() !== undefined)
        assert.isTrue(yield* eventually(done, TestClock.adjust("1 second")), "the calls timed out")
        for (const { fiber } of calls) {
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(error._tag, "TaskTimeoutError")
        }
        yield* TestClock.adjust("100 millis")
      })

    // Found by review: a thread the pool had terminated (its task timed out) but that was blocked
    // in a native call counted toward maxWorkers until the call returned: with every thread stuck,
    // the pool ran nothing for that long (seconds, minutes), though it ran nothing for anyone.
    for (const maxWorkers of [1, 2]) {
      it.effect(
        `runs new tasks while its threads stay stuck after their tasks timed out (maxWorkers ${maxWorkers})`,
        () => {
          const name = `stuck-${maxWorkers}`
          return withPool({ name, maxWorkers, timeout: "1 second", gracePeriod: "100 millis" })(
            Effect.gen(function* () {
              const stuck = []
              for (let i = 0; i < maxWorkers; i++) stuck.push(yield* nativeBlock)
              yield* timeOut(stuck)
              assert.isTrue(yield* reads(terminating, name, maxWorkers), "the gauge counts the stuck threads")
              const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
              assert.isTrue(
                yield* eventually(() => next.pollUnsafe() !== undefined),
                "the task waited for a stuck thread"
              )
              assert.isTrue(Exit.isSuccess(yield* Fiber.await(next)))
              // Not unblocked yet: their calls still hold them.
              assert.isTrue(yield* reads(terminating, name, maxWorkers))
              for (const { unblock } of stuck) unblock()
              assert.isTrue(yield* reads(terminating, name, 0), "the gauge drops as they exit")
            })
          )
        }
      )
    }

    // Found by review, with the fix above: timeouts that keep leaving threads stuck must not pile
    // them up. Up to maxWorkers stuck threads do not count; past that, tasks wait for one to exit.
    it.effect("starts no thread in place of stuck ones past maxWorkers of them: tasks wait for one to exit", () =>
      withPool({ name: "stuck-cap", maxWorkers: 1, timeout: "1 second", gracePeriod: "100 millis" })(
        Effect.gen(function* () {
          const first = yield* nativeBlock
          yield* timeOut([first])
          // On a thread started in place of the first one's.
          const second = yield* nativeBlock
          yield* timeOut([second])
          assert.isTrue(yield* reads(terminating, "stuck-cap", 2))
          const next = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
          // Queued: the dispatch round after its submit has decided whether to start a thread.
          assert.isTrue(yield* reads(NodeBlocking.metrics.queueLength, "stuck-cap", 1))
          // Thread ids are handed out in the order threads are created: one the pool started by now
          // has a lower id than this one.
          const probe = new Worker("", { eval: true })
          const mark = probe.threadId
          yield* Effect.promise(() => probe.terminate())
          first.unblock()
          assert.isAbove(yield* Fiber.join(next), mark, "a third thread started, both others stuck")
          assert.isTrue(yield* reads(terminating, "stuck-cap", 1), "the second call still holds its thread")
        })
      )
    )

    // Found by review: the pool ended a thread whose import it gave up on (importTimeout) with the
    // Worker's own terminate, not its `terminate`: blocked in a native call at the module's top
    // level, the thread still counted toward maxWorkers and held the call waiting for the import
    // and the tasks sent ahead to it until the call returned (8 s for an 8 s spawnSync).
    it.live(
      "runs other tasks while a thread whose import expired stays blocked in a native call; blames the module",
      () =>
        withPool({
          name: "stuck-import",
          maxWorkers: 1,
          importTimeout: "300 millis",
          gracePeriod: "100 millis",
          crashLoop: { deaths: 1, cooldown: "1 minute" }
        })(
          Effect.gen(function* () {
            // Measured as short: the next call is sent ahead to the thread, behind the import.
            for (let i = 0; i < 3; i++) yield* Blocking.run(P.threadId, undefined)
            const { file, unblock, blocked } = yield* releaseFile
            const module = new URL(`?release=${encodeURIComponent(file)}`, fixture("nativeImport.ts"))
            const stuck = Blocking.task({ ...T.square, module, name: "square" })
            const importing = yield* Effect.forkChild(Effect.flip(Blocking.run(stuck, 2)))
            const behind = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
            assert.isTrue(yield* eventually(blocked), "the import started")
            // The pool gives up on the import (importTimeout, then the grace period; real time).
            assert.isTrue(
              yield* eventually(() => importing.pollUnsafe() !== undefined && behind.pollUnsafe() !== undefined),
              "the calls waited for the stuck thread"
            )
            const error = yield* Fiber.join(importing)
            assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "exit", String(error))
            assert.include(error.message, "its top-level code keeping the thread busy")
            assert.isTrue(Exit.isSuccess(yield* Fiber.await(behind)))
            assert.strictEqual(yield* Blocking.run(T.square, 3), 9)
            assert.isTrue(yield* reads(terminating, "stuck-import", 1), "the import still holds the thread")
            // The death is the module's: its breaker opened.
            const refused = yield* Effect.flip(Blocking.run(stuck, 4))
            assert.strictEqual(refused._tag === "WorkerDiedError" && refused.reason, "crash-loop", String(refused))
            unblock()
            assert.isTrue(yield* reads(terminating, "stuck-import", 0))
          })
        )
    )

    // Found by review: closing the layer waited for a stuck thread to exit, the call it was blocked
    // in to return (seconds, minutes), holding up every finalizer after it. It waits for a
    // terminated thread a grace period at most: the process itself exits only once the call
    // returns (Node waits for its threads as it exits), as it did.
    for (const shutdown of ["drain", "cancel"] as const) {
      it.effect(`closes (${shutdown}) without waiting past the grace period for a thread stuck in a native call`, () =>
        Effect.gen(function* () {
          const name = `stuck-close-${shutdown}`
          const scope = yield* Scope.make()
          const executor = yield* NodeBlocking.make({
            name,
            maxWorkers: 1,
            shutdown,
            timeout: "1 second",
            gracePeriod: "100 millis"
          }).pipe(Scope.provide(scope))
          const stuck = yield* nativeBlock.pipe(Effect.provideService(Blocking.BlockingExecutor, executor))
          // Draining, the pool terminated the thread when the call timed out; cancelling, the close does.
          if (shutdown === "drain") yield* timeOut([stuck])
          const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
          if (shutdown === "cancel") {
            assert.strictEqual((yield* Effect.flip(Fiber.join(stuck.fiber)))._tag, "ExecutorShutDownError")
          }
          const closed = () => closing.pollUnsafe() !== undefined
          assert.isTrue(yield* eventually(closed, TestClock.adjust("100 millis")), "the close waited for the thread")
          assert.isTrue(yield* reads(terminating, name, 1), "its call still holds the thread")
          stuck.unblock()
          assert.isTrue(yield* reads(terminating, name, 0))
        }).pipe(Effect.scoped)
      )
    }
  })

  describe("runAll", () => {
    it.effect("cancels the tasks still running on other threads when one fails", () =>
      withPool({ minWorkers: 2, maxWorkers: 2, waitForWorkers: true, maxTasksPerWorker: 1 })(
        Effect.gen(function* () {
          const f = flags(4)
          // Slot 0 waits for its signal on one thread; slot 1 fails on the other once slot 0 runs.
          const error = yield* Effect.flip(
            Blocking.runAll(T.waitOrFail, [
              { shared: shared(f), slot: 0, fail: false },
              { shared: shared(f), slot: 1, fail: true }
            ])
          )
          assert.instanceOf(error, T.Negative)
          yield* waitForFlag(f, 1)
        })
      )
    )
  })

  describe("crash recovery", () => {
    it.effect(
      "fails only the task whose thread dies (process.exit, an uncaught throw); 100 tasks in flight all complete",
      () =>
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
            const [exited, threw] = yield* Effect.all(
              [Effect.flip(Blocking.run(P.exit, 3)), Effect.flip(Blocking.run(P.throwLater, "thrown in a timer"))],
              { concurrency: "unbounded" }
            )
            assert.strictEqual(exited._tag === "WorkerDiedError" && `${exited.reason} ${exited.exitCode}`, "exit 3")
            assert.strictEqual(threw._tag === "WorkerDiedError" && `${threw.reason} ${threw.exitCode}`, "exit 1")
            assert.include(threw.message, "thrown in a timer")
            assert.deepStrictEqual(
              yield* Fiber.join(others),
              Array.from({ length: 100 }, (_, n) => n * n)
            )
            assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashesBefore, 2)
          })
        )
    )

    it.effect("fails a task sent ahead with a transferred payload when its thread dies: its buffers died with it", () =>
      withPool({ maxWorkers: 1, minWorkers: 1, waitForWorkers: true, tasks: [P.exit, T.reverse] })(
        Effect.gen(function* () {
          // A task never measured is not sent ahead, nor one measured long (over 2 ms: a first call
          // on a loaded machine can be): runs enough that its average (1/8 weight) comes down.
          for (let i = 0; i < 30; i++) yield* Blocking.run(T.reverse, new Uint8Array([1]))
          // Sent together to the one thread: the first kills it; the second's buffer was moved to it.
          const [killed, held] = yield* Effect.all(
            [Effect.flip(Blocking.run(P.exit, 3)), Effect.flip(Blocking.run(T.reverse, new Uint8Array([1, 2, 3])))],
            { concurrency: "unbounded" }
          )
          assert.strictEqual(killed._tag === "WorkerDiedError" && killed.reason, "exit")
          assert.strictEqual(held._tag === "WorkerDiedError" && `${held.reason} ${held.exitCode}`, "exit 3")
          assert.include(held.message, "transferred payload was lost with the thread")
          const reversed = yield* Blocking.run(T.reverse, new Uint8Array([1, 2, 3]))
          assert.deepStrictEqual([...reversed], [3, 2, 1], "a new thread took over")
        })
      )
    )

    it.effect("fails only the task whose thread throws null, undefined or a revoked Proxy from a timer", () =>
      withPool({ maxWorkers: 1 })(
        Effect.gen(function* () {
          // A task of the module has finished: its later deaths are single crashes, not a crash loop.
          yield* Blocking.run(P.threadId, undefined)
          const kinds = ["null", "undefined", "symbol", "revoked proxy", "null prototype"] as const
          for (const kind of kinds) {
            const error = yield* Effect.flip(Blocking.run(P.throwValueLater, kind))
            assert.strictEqual(error._tag === "WorkerDiedError" && `${error.reason} ${error.exitCode}`, "exit 1", kind)
            assert.strictEqual(yield* Blocking.run(T.square, 5), 25, `a new thread took over after ${kind}`)
          }
        })
      )
    )

    it.effect("keeps the thread alive when a handler throws an Error it cannot read: it fails typed", () =>
      withPool({ name: "strange-errors", maxWorkers: 1 })(
        Effect.gen(function* () {
          const thread = yield* Blocking.run(P.threadId, undefined)
          for (const kind of T.strangeErrors) {
            for (const async of [false, true]) {
              const error = yield* Effect.flip(Blocking.run(T.throwStrange, { kind, async } as T.StrangePayload))
              assert.strictEqual(error._tag, "HandlerError", `${kind}, async: ${async}`)
            }
          }
          assert.strictEqual(yield* Blocking.run(P.threadId, undefined), thread, "the same thread")
          const crashes = Metric.withAttributes(NodeBlocking.metrics.crashes, { pool: "strange-errors" })
          assert.strictEqual(yield* counterValue(crashes as typeof NodeBlocking.metrics.crashes), 0)
        })
      )
    )

    it.effect("ignores whatever a task posts on its thread's parentPort", () =>
      withPool({ maxWorkers: 1 })(
        Effect.gen(function* () {
          assert.strictEqual(yield* Blocking.run(P.postToParent, undefined), "posted")
          assert.deepStrictEqual(
            yield* Effect.forEach([1, 2, 3], (n) => Blocking.run(T.square, n), { concurrency: "unbounded" }),
            [1, 4, 9]
          )
        })
      )
    )

    it.live(
      "fails a result its thread can send but the pool cannot read with InvalidResultError, none waiting for good",
      () =>
        // Nested 10,000 deep: a pool thread's 4 MB stack serializes it, the main thread's cannot read it
        // back, and Node drops the message with the results in it. Bounded by a real timeout: without
        // an answer the calls would wait for good. "cancel": a drain would wait for them too.
        withPool({ maxWorkers: 1, shutdown: "cancel" })(
          Effect.gen(function* () {
            assert.deepStrictEqual(yield* bounded(Blocking.run(P.nested, 2)), [[]])
            const error = yield* bounded(Effect.flip(Blocking.run(P.nested, 10_000)))
            assert.strictEqual(error._tag, "InvalidResultError")
            assert.include(error.message, "cannot be received from its thread")
            // Results sent in the same message are lost with it: they fail too, and nothing waits.
            const settled = yield* bounded(Blocking.runAllSettled(P.nested, [1, 10_000, 1, 3]))
            assert.strictEqual(settled.length, 4)
            const second = settled[1]!
            assert.isTrue(Result.isFailure(second) && second.failure._tag === "InvalidResultError")
            assert.deepStrictEqual(yield* bounded(Blocking.run(P.nested, 1)), [])
          })
        )
    )

    it.live(
      "fails a payload its thread cannot read (a stack made small) with InvalidPayloadError, none waiting for good",
      () =>
        // Nested 2,000 deep: this thread sends it, a thread limited to a 0.5 MB stack cannot read it,
        // and Node drops the message with the jobs in it. Bounded by a real timeout: without an
        // answer the call would wait for good. "cancel": a drain would wait for it too.
        withPool({ maxWorkers: 1, shutdown: "cancel", resourceLimits: { stackSizeMb: 0.5 } })(
          Effect.gen(function* () {
            // The task's first call, lost with the task's announcement: the next call announces it again.
            const error = yield* bounded(Effect.flip(Blocking.run(P.depthOf, nestedArrays(2_000))))
            assert.strictEqual(error._tag, "InvalidPayloadError")
            assert.include(error.message, "cannot be read by its thread")
            assert.strictEqual(yield* bounded(Blocking.run(P.depthOf, nestedArrays(3))), 3)
          })
        )
    )

    it.live(
      "enforces the run timeout of a task whose Started message was lost with a result the pool cannot read",
      () =>
        // `nestedCached` 10,000 deep ends untimed at once, its result held back; the timed `block` sent
        // with it starts and sends that result in its Started message, which the pool cannot read. The
        // run timeout must still end `block` (blocked for 30 s, deaf to its signal) by terminating its
        // thread; without it, the thread cannot answer Sync either, and both calls wait 30 s.
        withPool({ maxWorkers: 1, shutdown: "cancel", gracePeriod: "100 millis" })(
          Effect.gen(function* () {
            // Both measured as short: the pool sends them ahead together.
            const warm = flags()
            release(warm)
            for (let i = 0; i < 16; i++) {
              yield* bounded(Blocking.run(P.block, warm.buffer as SharedArrayBuffer))
              yield* bounded(Blocking.run(P.nestedCached, 2))
            }
            yield* bounded(Effect.flip(Blocking.run(P.nestedCached, 10_000)))
            // Held behind a first block, the two are sent together when it ends, in one message.
            const first = flags()
            const running = yield* Effect.forkChild(Blocking.run(P.block, first.buffer as SharedArrayBuffer))
            yield* waitForFlag(first, 0)
            const shared = flags()
            const both = yield* Effect.forkChild(
              Effect.all(
                [
                  Effect.flip(Blocking.run(P.nestedCached, 10_000)),
                  Effect.flip(Blocking.run(P.block, shared.buffer as SharedArrayBuffer, { timeout: "300 millis" }))
                ],
                { concurrency: "unbounded" }
              )
            )
            // Real time for both to reach the thread while the first still blocks it.
            yield* Effect.sleep("50 millis")
            release(first)
            yield* Fiber.join(running)
            const [lost, blocked] = yield* bounded(Fiber.join(both))
            release(shared)
            assert.strictEqual(blocked._tag === "TaskTimeoutError" && blocked.phase, "running")
            assert.strictEqual(lost._tag, "InvalidResultError")
          })
        )
    )

    it.live("runs a task whose announcement was lost in an unreadable message, in a message sent after it", () =>
      // The first call of `depthOf` on a thread announces the task in a message the thread cannot
      // read (a payload 2,000 deep, a stack of 0.5 MB); the second is sent in its own message before
      // the thread says so, its task not announced again: it must still run the task.
      withPool({ maxWorkers: 1, shutdown: "cancel", resourceLimits: { stackSizeMb: 0.5 } })(
        Effect.gen(function* () {
          // Measured as short (sent ahead), then on a new thread that has not heard of it.
          for (let i = 0; i < 16; i++) yield* bounded(Blocking.run(P.depthOf, nestedArrays(1)))
          const died = yield* bounded(Effect.flip(Blocking.run(P.exit, 1)))
          assert.strictEqual(died._tag, "WorkerDiedError")
          // Both wait in the thread's port behind a first block, in messages of their own.
          const first = flags()
          const running = yield* Effect.forkChild(Blocking.run(P.block, first.buffer as SharedArrayBuffer))
          yield* waitForFlag(first, 0)
          const deep = yield* Effect.forkChild(Effect.flip(Blocking.run(P.depthOf, nestedArrays(2_000))))
          yield* Effect.sleep("20 millis")
          const shallow = yield* Effect.forkChild(Blocking.run(P.depthOf, nestedArrays(3)))
          yield* Effect.sleep("20 millis")
          release(first)
          yield* bounded(Fiber.join(running))
          const error = yield* bounded(Fiber.join(deep))
          assert.strictEqual(error._tag, "InvalidPayloadError")
          assert.strictEqual(yield* bounded(Fiber.join(shallow)), 3)
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

    it.effect(
      "fails a module's tasks fast after it kills 3 threads in a row, for 10 seconds, then tries once more",
      () =>
        withPool({ maxWorkers: 1 })(
          Effect.gen(function* () {
            const reasons: Array<string> = []
            for (let i = 0; i < 4; i++) reasons.push(yield* doomedReason)
            const open = yield* Effect.flip(Blocking.run(doomed, undefined))
            assert.include(
              open.message,
              "exitOnImport.ts killed 3 threads in a row before any of its tasks finished (last: exit code 7); its tasks fail fast for 10000 ms"
            )
            assert.strictEqual(yield* Blocking.run(T.square, 6), 36, "tasks of other modules still run")
            yield* TestClock.adjust("9999 millis")
            reasons.push(yield* doomedReason)
            yield* TestClock.adjust("1 millis")
            reasons.push(yield* doomedReason, yield* doomedReason)
            assert.deepStrictEqual(reasons, ["exit", "exit", "exit", "crash-loop", "crash-loop", "exit", "crash-loop"])
          })
        )
    )

    it.effect(
      "fails every task fast, naming the cause, when threads die before they are ready (crashLoop options)",
      () =>
        // 5 MB of heap is too little for a thread to start on Node 24 (it needs 6-8 MB); below 3 MB
        // V8 aborts the whole process instead of failing the thread.
        withPool({
          maxWorkers: 1,
          resourceLimits: { maxOldGenerationSizeMb: 5 },
          crashLoop: { deaths: 2, cooldown: "1 minute" }
        })(
          Effect.gen(function* () {
            const crashesBefore = yield* counterValue(NodeBlocking.metrics.crashes)
            for (let i = 0; i < 2; i++) {
              const error = yield* Effect.flip(Blocking.run(T.square, 2))
              assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "crash-loop")
              assert.include(error.message, "2 threads in a row died before they were ready (last: ")
              assert.include(error.message, "memory limit")
              assert.include(error.message, "every task fails fast for 60000 ms")
            }
            assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashesBefore, 2, "then no thread")
          })
        )
    )
  })

  describe("start-up", () => {
    it.effect("has minWorkers threads import the declared tasks' modules as they start, before any call", () =>
      Effect.gen(function* () {
        const imported: Array<number> = []
        const channel = new BroadcastChannel(announcedChannel)
        channel.onmessage = (event) => imported.push((event as MessageEvent<number>).data)
        yield* Effect.addFinalizer(() => Effect.sync(() => channel.close()))
        yield* Layer.build(
          NodeBlocking.layer({ minWorkers: 2, maxWorkers: 2, tasks: [announced], waitForWorkers: true })
        )
        // The layer is built: both threads are ready, each has imported the module.
        for (let i = 0; i < 200 && imported.length < 2; i++) yield* realSleep(10)
        assert.strictEqual(imported.length, 2, "both threads imported the module without a call")
        assert.notStrictEqual(imported[0], imported[1])
      }).pipe(Effect.scoped)
    )

    it.effect("has threads started later import the modules of tasks that have run, before any call", () =>
      withPool({ minWorkers: 1, maxWorkers: 1 })(
        Effect.gen(function* () {
          const imported: Array<number> = []
          const channel = new BroadcastChannel(announcedChannel)
          channel.onmessage = (event) => imported.push((event as MessageEvent<number>).data)
          yield* Effect.addFinalizer(() => Effect.sync(() => channel.close()))
          const first = yield* Blocking.run(announced, undefined)
          yield* Blocking.run(P.threadId, undefined)
          // The thread dies; minWorkers starts another, which imports the module as it starts.
          assert.strictEqual((yield* Effect.flip(Blocking.run(P.exit, 3)))._tag, "WorkerDiedError")
          for (let i = 0; i < 300 && imported.length < 2; i++) yield* realSleep(10)
          assert.strictEqual(imported.length, 2, "the new thread imported the module without a call")
          assert.notStrictEqual(imported[1], first)
        })
      )
    )

    it.effect("counts a task's run timeout from when its thread has imported the task's module", () =>
      withPool({ minWorkers: 1, maxWorkers: 1, waitForWorkers: true })(
        Effect.gen(function* () {
          const imports = yield* gatedImports
          const call = yield* Effect.forkChild(Blocking.run(gatedSquare, 3, { timeout: "1 second" }))
          assert.isTrue(yield* eventually(() => imports.count() === 1), "the thread imports the module")
          // However long the import takes, none of it is run time.
          yield* TestClock.adjust("5 seconds")
          yield* eventLoopTurn
          assert.isUndefined(call.pollUnsafe(), "no run timeout while the module is imported")
          imports.finish()
          assert.strictEqual(yield* Fiber.join(call), 9)
        })
      )
    )

    it.effect("has threads started later import a module a thread has imported, though no task of it has ended", () =>
      withPool({ minWorkers: 1, maxWorkers: 1, gracePeriod: "1 second" })(
        Effect.gen(function* () {
          const imports = yield* gatedImports
          const f = flags()
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          const call = yield* Effect.forkChild(Blocking.run(gatedBlock, shared(f), { timeout: "1 second" }))
          assert.isTrue(yield* eventually(() => imports.count() === 1))
          imports.finish()
          yield* waitForFlag(f, 0)
          // It never ends: its run timeout fails it, and its thread is terminated after the grace period.
          assert.isTrue(yield* eventually(() => call.pollUnsafe() !== undefined, TestClock.adjust("1 second")))
          const error = yield* Effect.flip(Fiber.join(call))
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.phase, "running")
          assert.isTrue(
            yield* eventually(() => imports.count() === 2, TestClock.adjust("1 second")),
            "the thread started in its place imported the module without a call"
          )
        })
      )
    )

    it.effect("ends a thread whose import does not settle within importTimeout; such deaths open the breaker", () =>
      withPool({ maxWorkers: 1, importTimeout: "300 millis", crashLoop: { deaths: 2, cooldown: "1 minute" } })(
        Effect.gen(function* () {
          const imports = yield* gatedImports
          const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
          // Two calls waiting for the one import (real time: the bound is the thread's). Each import
          // that times out ends its thread and fails the call waiting for it; the other call goes to
          // the next thread, whose import times out too. Nothing waits for the import for good, nor
          // runs on a thread it could still end.
          const calls = yield* Effect.forkChild(
            Effect.all([Blocking.run(gatedSquare, 3), Blocking.run(gatedSquare, 4)].map(Effect.flip), {
              concurrency: 2
            })
          )
          assert.isTrue(yield* eventually(() => calls.pollUnsafe() !== undefined), "the calls wait for the import")
          for (const error of yield* Fiber.join(calls)) {
            assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "exit")
            assert.include(
              error.message,
              `the import of ${gatedModule.href} did not settle within 300 ms (importTimeout)`
            )
          }
          assert.strictEqual(imports.count(), 2)
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashes, 2)
          // Two such deaths in a row: the module's tasks fail fast; other modules' run.
          const refused = yield* Effect.flip(Blocking.run(gatedSquare, 5))
          assert.strictEqual(refused._tag === "WorkerDiedError" && refused.reason, "crash-loop")
          assert.strictEqual(yield* Blocking.run(T.square, 6), 36)
          assert.strictEqual(imports.count(), 2, "no third import")
        })
      )
    )

    it.live(
      "ends an import's thread past importTimeout though the module catches uncaught exceptions; counted if the call gave up",
      () =>
        withPool({ maxWorkers: 1, importTimeout: "1 second", crashLoop: { deaths: 2, cooldown: "1 minute" } })(
          Effect.gen(function* () {
            const hanging = Blocking.task({ ...T.square, module: fixture("hangingImport.ts"), name: "square" })
            const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
            // A thrown timeout would be swallowed by the module's handler, and the call would wait for good.
            const first = yield* Effect.flip(Blocking.run(hanging, 2).pipe(Effect.timeout("8 seconds")))
            assert.strictEqual(first._tag === "WorkerDiedError" && first.reason, "exit")
            assert.include(first.message, "did not settle within 1000 ms (importTimeout)")
            // A call that gives up first (its queueTimeout) still has the thread's death counted against the
            // module: the second such death in a row opens its breaker. The queueTimeout leaves a new
            // thread time to start and take the call (a loaded machine took over 100 ms).
            const second = yield* Effect.flip(Blocking.run(hanging, 3, { queueTimeout: "500 millis" }))
            assert.strictEqual(second._tag, "TaskTimeoutError")
            let died = 0
            const count = Effect.map(counterValue(NodeBlocking.metrics.crashes), (now) => {
              died = now - crashes
            })
            yield* eventually(() => died === 2, count)
            assert.strictEqual(died, 2, "both threads ended")
            const refused = yield* Effect.flip(Blocking.run(hanging, 4))
            assert.strictEqual(refused._tag === "WorkerDiedError" && refused.reason, "crash-loop")
            assert.strictEqual(yield* Blocking.run(T.square, 5), 25)
          })
        )
    )

    it.live(
      "ends a thread whose import blocks it past importTimeout: its call fails, the pool goes on, a draining close ends",
      () =>
        Effect.gen(function* () {
          const blocking = Blocking.task({ ...T.square, module: fixture("blockingImport.ts"), name: "square" })
          const options = { maxWorkers: 1, importTimeout: "300 millis", gracePeriod: "100 millis" } as const
          yield* withPool(options)(
            Effect.gen(function* () {
              // The thread cannot keep its own import timer: the pool ends it.
              const error = yield* Effect.flip(Blocking.run(blocking, 2).pipe(Effect.timeout("10 seconds")))
              assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "exit", String(error))
              assert.include(
                error.message,
                "did not settle within 300 ms (importTimeout), its top-level code keeping the thread busy"
              )
              assert.strictEqual(yield* Blocking.run(T.square, 3), 9)
              // A call that gives up first (its queue timeout) leaves a thread that the pool still ends,
              // and the layer's draining close does not wait for it.
              const queued = yield* Effect.flip(Blocking.run(blocking, 4, { queueTimeout: "100 millis" }))
              assert.strictEqual(queued._tag, "TaskTimeoutError")
            })
          ).pipe(Effect.timeout("10 seconds"))
        })
    )

    it.live("a draining close ends a thread still importing for calls that went away, before or during the close", () =>
      Effect.gen(function* () {
        // Finished only when the test ends: the imports outlast the closes unless the pool ends them.
        const imports = yield* gatedImports
        const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
        // The default importTimeout (60 s) is what a close waited for.
        const before = yield* withPool({ maxWorkers: 1 })(
          Effect.gen(function* () {
            const call = yield* Effect.forkChild(Blocking.run(gatedSquare, 3))
            assert.isTrue(yield* eventually(() => imports.count() === 1))
            yield* Fiber.interrupt(call)
          })
        ).pipe(Effect.timeout("5 seconds"), Effect.exit)
        assert.isTrue(Exit.isSuccess(before), "closed after the call was interrupted")
        const scope = yield* Scope.make()
        const executor = yield* NodeBlocking.make({ maxWorkers: 1 }).pipe(Scope.provide(scope))
        const call = yield* Effect.forkDetach(
          Blocking.run(gatedSquare, 3).pipe(Effect.provideService(Blocking.BlockingExecutor, executor))
        )
        assert.isTrue(yield* eventually(() => imports.count() === 2))
        const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
        // Draining by now (were it not, the close would start after the interrupt: the case above).
        yield* realSleep(50)
        yield* Fiber.interrupt(call)
        const during = yield* Fiber.await(closing).pipe(Effect.timeout("5 seconds"), Effect.exit)
        assert.isTrue(Exit.isSuccess(during), "closed once the call was interrupted")
        assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashes, 0, "no thread died")
      }).pipe(Effect.scoped)
    )

    it.live("builds a waitForWorkers pool whose preloaded module blocks its thread: start-up breaker", () =>
      Effect.gen(function* () {
        const blocking = Blocking.task({ ...T.square, module: fixture("blockingImport.ts"), name: "square" })
        // The thread, spinning in the import, neither gets ready nor ends itself: the pool ends it
        // (the import bound, then 5 s for the thread's start), a death before it was ready.
        const executor = yield* Layer.build(
          NodeBlocking.layer({
            minWorkers: 1,
            maxWorkers: 1,
            waitForWorkers: true,
            tasks: [blocking],
            importTimeout: "300 millis",
            gracePeriod: "100 millis",
            crashLoop: { deaths: 1, cooldown: "1 minute" }
          })
        ).pipe(Effect.timeout("20 seconds"))
        const refused = yield* Effect.flip(Effect.provide(Blocking.run(T.square, 2), Layer.succeedContext(executor)))
        assert.strictEqual(refused._tag === "WorkerDiedError" && refused.reason, "crash-loop", String(refused))
        assert.include(refused.message, "importing the modules it preloads keeps it busy")
      }).pipe(Effect.scoped)
    )

    it.live("stops preloading learnt modules when threads preloading them die before they are ready", () =>
      withPool({ maxWorkers: 2, crashLoop: { deaths: 2, cooldown: "1 minute" } })(
        Effect.gen(function* () {
          const flaky = Blocking.task({ ...T.square, module: fixture("exitOnImportWhenSet.ts"), name: "square" })
          // Imported once on a thread of its own: new threads preload it from now on.
          assert.strictEqual(yield* Blocking.run(flaky, 3), 9)
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              process.env.VOLLEY_TEST_EXIT_ON_IMPORT = "1"
            }),
            () =>
              Effect.sync(() => {
                delete process.env.VOLLEY_TEST_EXIT_ON_IMPORT
              })
          )
          // With the one thread held, a second call starts a thread, which preloads the module and
          // dies. Two such deaths opened the start-up breaker, which then failed every task: now the
          // pool drops what it had learnt, and the next thread starts without it.
          yield* blockAThread
          assert.strictEqual(yield* Blocking.run(T.square, 4).pipe(Effect.timeout("10 seconds")), 16)
        })
      )
    )

    it.live("does not learn a module again once it stopped preloading learnt ones", () =>
      // The breaker stays out of it: P.exit's module kills three threads here.
      withPool({ maxWorkers: 1, crashLoop: { deaths: 10, cooldown: "1 minute" } })(
        Effect.gen(function* () {
          const flaky = Blocking.task({ ...T.square, module: fixture("exitOnImportWhenSet.ts"), name: "square" })
          const killing = (on: boolean) =>
            Effect.sync(() => {
              if (on) process.env.VOLLEY_TEST_EXIT_ON_IMPORT = "1"
              else delete process.env.VOLLEY_TEST_EXIT_ON_IMPORT
            })
          yield* Effect.addFinalizer(() => killing(false))
          const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
          const died = Effect.map(counterValue(NodeBlocking.metrics.crashes), (now) => now - crashes)
          // Learnt (a timed call reports its start), then the module kills the threads that import it.
          assert.strictEqual(yield* Blocking.run(flaky, 3, { timeout: "10 seconds" }), 9)
          yield* killing(true)
          assert.strictEqual((yield* Effect.flip(Blocking.run(P.exit, 3)))._tag, "WorkerDiedError")
          // The next thread preloads it and dies; the one after starts without it.
          assert.strictEqual(yield* Blocking.run(T.square, 4).pipe(Effect.timeout("10 seconds")), 16)
          assert.strictEqual(yield* died, 2)
          // Imported (and timed) again, on a thread started where it imports: it is not learnt again,
          // so a thread started after the next death does not die preloading it. (A thread reads
          // the environment as it was when it started.)
          yield* killing(false)
          assert.strictEqual((yield* Effect.flip(Blocking.run(P.exit, 3)))._tag, "WorkerDiedError")
          assert.strictEqual(yield* Blocking.run(flaky, 5, { timeout: "10 seconds" }), 25)
          yield* killing(true)
          assert.strictEqual((yield* Effect.flip(Blocking.run(P.exit, 3)))._tag, "WorkerDiedError")
          assert.strictEqual(yield* Blocking.run(T.square, 6).pipe(Effect.timeout("10 seconds")), 36)
          assert.strictEqual(yield* died, 4)
        })
      )
    )

    it.live("ends no thread that got ready while the pool's own thread was too busy to hear it", () =>
      Effect.gen(function* () {
        const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
        const executor = yield* Layer.build(
          NodeBlocking.layer({
            minWorkers: 1,
            maxWorkers: 1,
            tasks: [T.square],
            importTimeout: "300 millis",
            gracePeriod: "100 millis"
          })
        )
        // Busy past the start-up bound (0.4 s + 5 s) from an immediate, before the pool reads the
        // thread's Ready: the timers run first, then the message.
        yield* Effect.promise(
          () =>
            new Promise<void>((resolve) =>
              setImmediate(() => {
                const end = Date.now() + 5_800
                while (Date.now() < end) {}
                resolve()
              })
            )
        )
        assert.strictEqual(yield* Effect.provide(Blocking.run(T.square, 3), Layer.succeedContext(executor)), 9)
        assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashes, 0)
      }).pipe(Effect.scoped)
    )

    it.effect(
      "keeps its own import bounds on real time: a TestClock moved on ends no thread that starts or imports",
      () =>
        withPool({ minWorkers: 1, maxWorkers: 1 })(
          Effect.gen(function* () {
            const imports = yield* gatedImports
            const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
            // Far past importTimeout (60 s) on the pool's clock, while the thread starts.
            yield* TestClock.adjust("2 minutes")
            assert.strictEqual(yield* Blocking.run(T.square, 2), 4)
            // And while it imports a module.
            const call = yield* Effect.forkChild(Blocking.run(gatedSquare, 3))
            assert.isTrue(yield* eventually(() => imports.count() === 1))
            yield* TestClock.adjust("2 minutes")
            yield* realSleep(50)
            imports.finish()
            assert.strictEqual(yield* Fiber.join(call), 9)
            assert.strictEqual((yield* counterValue(NodeBlocking.metrics.crashes)) - crashes, 0)
          })
        )
    )

    it.live("runs nothing more on a thread whose import expired, though its end reaches the pool late", () =>
      withPool({ maxWorkers: 1, minWorkers: 1, importTimeout: "300 millis" })(
        Effect.gen(function* () {
          const late = Blocking.task({ ...T.square, module: fixture("lateImport.ts"), name: "square" })
          // A task measured as short is sent ahead to the thread, behind the import.
          for (let i = 0; i < 3; i++) yield* runReleasedBlock
          const f = flags()
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          const importing = yield* Effect.forkChild(Effect.flip(Blocking.run(late, 3)))
          const behind = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* eventLoopTurn
          // The pool hears of the expired import late (its event loop busy past the import's end):
          // the thread must not have gone on to the import's end and the job behind it.
          yield* Effect.sync(() => {
            const end = Date.now() + 1000
            while (Date.now() < end) {}
          })
          assert.strictEqual(Atomics.load(f, 0), 0, "the job behind the import did not start on that thread")
          const error = yield* Fiber.join(importing)
          assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "exit")
          yield* waitForFlag(f, 0)
          release(f)
          yield* Fiber.join(behind)
          // Only the late module's death was counted: the pool has no reason to refuse anything.
          yield* runReleasedBlock
        })
      )
    )

    it.live("stops preloading a module that imported once when its import later expires; no start-up breaker", () =>
      withPool({
        minWorkers: 2,
        maxWorkers: 2,
        importTimeout: "300 millis",
        crashLoop: { deaths: 2, cooldown: "1 minute" }
      })(
        Effect.gen(function* () {
          const imports = yield* gatedImports
          yield* Blocking.run(P.threadId, undefined)
          const first = yield* Effect.forkChild(Blocking.run(gatedSquare, 3))
          assert.isTrue(yield* eventually(() => imports.count() === 1))
          imports.finish()
          assert.strictEqual(yield* Fiber.join(first), 9)
          // New threads now import the module as they start, and from here on its import hangs. One
          // crash (of a module that has worked) makes the pool start one: its import expires. That
          // was a start-up death, and the next thread's too: the start-up breaker refused every task.
          const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
          assert.strictEqual((yield* Effect.flip(Blocking.run(P.exit, 3)))._tag, "WorkerDiedError")
          let died = 0
          const count = Effect.map(counterValue(NodeBlocking.metrics.crashes), (now) => {
            died = now - crashes
          })
          yield* eventually(() => died >= 2, count)
          // Long enough for a third thread to start and expire (300 ms) if it still imported the module.
          for (let i = 0; i < 100 && died < 3; i++) yield* Effect.andThen(realSleep(10), count)
          assert.strictEqual(died, 2, "the thread after the expired one did not import the module")
          assert.strictEqual(imports.count(), 2)
          assert.strictEqual(yield* Blocking.run(T.square, 4), 16)
        })
      )
    )

    it.live("fails a task with a transferred payload sent ahead behind an expired import, saying it did not run", () =>
      withPool({ maxWorkers: 1, minWorkers: 1, importTimeout: "300 millis", tasks: [T.reverse], waitForWorkers: true })(
        Effect.gen(function* () {
          const imports = yield* gatedImports
          // Measured as short: sent ahead to the thread importing the gated module. Runs enough that
          // its average comes down on a loaded machine (3 were not once: it ran on a new thread).
          for (let i = 0; i < 30; i++) yield* Blocking.run(T.reverse, new Uint8Array([1]))
          const importing = yield* Effect.forkChild(Effect.flip(Blocking.run(gatedSquare, 3)))
          assert.isTrue(yield* eventually(() => imports.count() === 1))
          // Its buffers went to the thread with it, so it cannot be sent again; the thread ran nothing after the import.
          const behind = yield* Effect.flip(Blocking.run(T.reverse, new Uint8Array([1, 2, 3])))
          assert.strictEqual(behind._tag === "WorkerDiedError" && behind.reason, "exit")
          assert.include(behind.message, "so it is not run again (it did not run)")
          assert.strictEqual((yield* Fiber.join(importing))._tag, "WorkerDiedError")
        })
      )
    )

    it.effect("builds a waitForWorkers pool whose preloaded module never finishes importing: start-up breaker", () =>
      Effect.gen(function* () {
        const imports = yield* gatedImports
        // Threads end before they are ready, as when a declared module kills them: the build ends
        // once the start-up breaker opens, and calls fail fast.
        const executor = yield* Layer.build(
          NodeBlocking.layer({
            minWorkers: 1,
            maxWorkers: 1,
            waitForWorkers: true,
            importTimeout: "300 millis",
            tasks: [gatedSquare],
            crashLoop: { deaths: 2, cooldown: "1 minute" }
          })
        )
        assert.strictEqual(imports.count(), 2)
        const error = yield* Effect.flip(Effect.provide(Blocking.run(T.square, 3), executor))
        assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "crash-loop")
        assert.include(error.message, "did not settle within 300 ms (importTimeout)")
        const invalid = yield* Effect.flip(Layer.build(NodeBlocking.layer({ importTimeout: 0 })))
        assert.strictEqual(invalid._tag === "InvalidOptionsError" && invalid.option, "importTimeout")
      }).pipe(Effect.scoped)
    )

    it.effect("runs the tasks of a module that also exports an object throwing on unknown keys, preloaded too", () =>
      Effect.gen(function* () {
        // Reading that export to look for tasks threw, and the thread died: every call, and with
        // the module preloaded every thread before it was ready, so no task of any module ran.
        const strict = Strict.square
        const executor = yield* Layer.build(
          NodeBlocking.layer({ minWorkers: 1, maxWorkers: 1, waitForWorkers: true, tasks: [strict] })
        )
        assert.strictEqual(yield* Effect.provide(Blocking.run(strict, 3), executor), 9)
        assert.strictEqual(yield* Effect.provide(Blocking.run(T.square, 4), executor), 16)
        const crashes = yield* counterValue(NodeBlocking.metrics.crashes)
        assert.strictEqual(yield* Effect.provide(Blocking.run(strict, 5), executor), 25)
        assert.strictEqual(yield* counterValue(NodeBlocking.metrics.crashes), crashes, "no thread died")
      }).pipe(Effect.scoped)
    )

    it.effect("rejects tasks without a module URL", () =>
      Effect.gen(function* () {
        const noModule = Blocking.task({
          name: "nowhere",
          payload: Schema.Void,
          success: Schema.Void,
          handler: () => {}
        })
        const error = yield* Effect.flip(Layer.build(NodeBlocking.layer({ tasks: [noModule] })).pipe(Effect.scoped))
        assert.strictEqual(error._tag === "InvalidOptionsError" && error.option, "tasks")
      })
    )

    it.effect("fails calls with WorkerDiedError, never an uncaught exception, when no thread can be created", () =>
      Effect.gen(function* () {
        const uncaught: Array<unknown> = []
        const onUncaught = (error: unknown) => uncaught.push(error)
        process.prependListener("uncaughtException", onUncaught)
        yield* Effect.addFinalizer(() => Effect.sync(() => process.removeListener("uncaughtException", onUncaught)))
        // A stack the OS cannot map makes `new Worker` throw ERR_WORKER_INIT_FAILED, as a
        // container's pids limit does (EAGAIN).
        yield* withPool({
          name: "unborn",
          maxWorkers: 1,
          resourceLimits: { stackSizeMb: 100_000 },
          crashLoop: { deaths: 2, cooldown: "1 minute" }
        })(
          Effect.gen(function* () {
            const call = yield* Effect.forkChild(Effect.flip(Blocking.run(T.square, 2)))
            const settled = yield* eventually(() => call.pollUnsafe() !== undefined)
            // A call that hangs is interrupted: closing the pool would wait for it.
            if (!settled) yield* Fiber.interrupt(call)
            assert.isTrue(settled, "the call hangs")
            const errors = [yield* Fiber.join(call), yield* Effect.flip(Blocking.run(T.square, 3))]
            for (const error of errors) {
              assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "crash-loop")
              assert.include(error.message, "2 threads in a row died before they were ready (last: ")
              assert.include(error.message, "the thread could not be created (ERR_WORKER_INIT_FAILED")
            }
            const crashes = Metric.withAttributes(NodeBlocking.metrics.crashes, { pool: "unborn" })
            assert.strictEqual(yield* counterValue(crashes), 2, "counted as deaths")
          })
        )
        assert.deepStrictEqual(uncaught, [])
      }).pipe(Effect.scoped)
    )

    it.effect(
      "builds a pool whose minWorkers threads cannot be created, waiting for the start-up breaker; calls fail fast",
      () =>
        Effect.gen(function* () {
          // Waits for the threads, as when they die before they are ready: until the breaker opens.
          const executor = yield* Layer.build(
            NodeBlocking.layer({
              minWorkers: 2,
              maxWorkers: 2,
              waitForWorkers: true,
              resourceLimits: { stackSizeMb: 100_000 },
              crashLoop: { deaths: 2, cooldown: "1 minute" }
            })
          )
          const error = yield* Effect.flip(Effect.provide(Blocking.run(T.square, 2), executor))
          assert.strictEqual(error._tag === "WorkerDiedError" && error.reason, "crash-loop")
          assert.include(error.message, "the thread could not be created (ERR_WORKER_INIT_FAILED")
        }).pipe(Effect.scoped)
    )
  })

  // A pool's callers are resumed from inside its bookkeeping (a reply, a death, a breaker that
  // opens): what they do then (interrupt other calls, close the pool) meets a consistent pool.
  describe("races", () => {
    it.effect("reports a task with a timeout as soon as it ends, even while the next task on its thread runs", () =>
      withPool({ maxWorkers: 1, minWorkers: 1 })(
        Effect.gen(function* () {
          // Run once: a task never measured is not sent ahead.
          yield* runReleasedBlock
          const f = flags()
          // Sent together to the one thread: the first has a run timeout, the second blocks it.
          const timed = yield* Effect.forkChild(
            Blocking.run(P.slowSquare, { n: 3, millis: 0 }, { timeout: "1 second" })
          )
          const blocking = yield* Effect.forkChild(Blocking.run(P.block, shared(f)))
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          yield* waitForFlag(f, 0)
          // Held back until the blocking task ended, its run timeout would fire although it had
          // answered, and its thread (the blocking task on it) would be terminated.
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
          assert.deepStrictEqual(timed.pollUnsafe(), Exit.succeed(9))
          yield* TestClock.adjust("2 seconds")
          release(f)
          yield* Fiber.join(blocking)
          assert.strictEqual(Atomics.load(f, 2), 1)
        })
      )
    )

    it.effect("reports that a task with a queue timeout started, so the timeout ends when it runs", () =>
      withPool({ maxWorkers: 1, minWorkers: 1 })(
        Effect.gen(function* () {
          // Run once: a task never measured is not sent ahead.
          yield* runReleasedBlock
          const f = flags()
          // Sent together: the first answers at once, the second (with a queue timeout) then runs.
          const first = yield* Effect.forkChild(Blocking.run(P.slowSquare, { n: 2, millis: 0 }))
          const queued = yield* Effect.forkChild(Blocking.run(P.block, shared(f), { queueTimeout: "500 millis" }))
          yield* Effect.addFinalizer(() => Effect.sync(() => release(f)))
          yield* waitForFlag(f, 0)
          yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
          // Running, not queued: its queue timeout must not fail it (and stop its thread).
          yield* TestClock.adjust("1 second")
          release(f)
          assert.deepStrictEqual(yield* Fiber.await(queued), Exit.void)
          assert.strictEqual(yield* Fiber.join(first), 4)
        })
      )
    )

    it.effect("never runs a queued task whose caller gave up when a crash loop failed the call beside it", () =>
      withPool({ maxWorkers: 1, minWorkers: 1, maxTasksPerWorker: 1, crashLoop: { deaths: 1 } })(
        Effect.gen(function* () {
          const f = flags()
          yield* Blocking.run(P.threadId, undefined)
          // The thread dies on the first; the breaker opens and fails the second, queued behind it,
          // whose caller at once gives up the third, queued too.
          const first = yield* Effect.forkChild(Effect.exit(Blocking.run(doomed, undefined)))
          yield* eventLoopTurn
          const third = yield* Effect.forkChild(Blocking.run(P.mark, { shared: shared(f), index: 0 }))
          const second = yield* Effect.forkChild(
            Blocking.run(doomed, undefined).pipe(Effect.onError(() => Effect.sync(() => third.interruptUnsafe())))
          )
          assert.isTrue(Exit.isFailure(yield* Fiber.await(second)))
          assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(third)))
          yield* Fiber.join(first)
          // One thread, one task at a time: had the third been queued again, it ran before the
          // second of these (a new call may go ahead of a task queued again).
          yield* Blocking.run(P.threadId, undefined)
          yield* Blocking.run(P.threadId, undefined)
          assert.strictEqual(Atomics.load(f, 0), 0)
        })
      )
    )

    it.effect("fails the tasks of a dead thread when the caller of the one that killed it closes the pool", () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const executor = yield* NodeBlocking.make({ maxWorkers: 1, minWorkers: 1, shutdown: "cancel" }).pipe(
          Scope.provide(scope)
        )
        const f = flags()
        const run = <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor>) =>
          Effect.provideService(effect, Blocking.BlockingExecutor, executor)
        // Run once: a task never measured is not sent ahead.
        yield* run(Blocking.run(P.mark, { shared: shared(f), index: 1 }))
        // Sent together: the first kills the thread; its caller closes the pool at once.
        const [killed, other] = yield* run(
          Effect.all(
            [
              Effect.exit(Blocking.run(P.exit, 3)).pipe(Effect.tap(() => Scope.close(scope, Exit.void))),
              Effect.exit(Blocking.run(P.mark, { shared: shared(f), index: 0 }))
            ],
            { concurrency: "unbounded" }
          )
        )
        assert.isTrue(Exit.isFailure(killed))
        const error = Exit.isFailure(other) ? Cause.findErrorOption(other.cause) : Option.none()
        assert.strictEqual(Option.isSome(error) ? error.value._tag : "succeeded", "ExecutorShutDownError")
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
        assert.strictEqual(Atomics.load(f, 0), 0)
      })
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
    layer(onePool)((it) => {
      it.effect("wraps each run in a span, a child of the caller's, naming the task and its thread", () =>
        Effect.gen(function* () {
          const { spans, recording } = recordingTracer()
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

      it.effect("ends a run's span with its failure when the task never reaches a thread", () =>
        Effect.gen(function* () {
          const { spans, recording } = recordingTracer()
          const homeless = Blocking.task({
            name: "homeless",
            payload: Schema.Void,
            success: Schema.Void,
            handler: () => {}
          })
          const error = yield* Effect.flip(Blocking.run(homeless, undefined)).pipe(
            Effect.withSpan("caller"),
            Effect.provideService(Tracer.Tracer, recording)
          )
          assert.strictEqual(error._tag, "TaskNotFoundError")
          const caller = spans.find((span) => span.name === "caller")!
          const task = spans.find((span) => span.name === "Blocking.run homeless")!
          assert.strictEqual(task.parent._tag === "Some" && task.parent.value.spanId, caller.spanId)
          assert.strictEqual(task.status._tag === "Ended" && task.status.exit._tag, "Failure")
          assert.isTrue(task.status.startTime >= caller.status.startTime)
        })
      )

      it.effect("ends the span of a run interrupted while it waits for a thread, as interrupted", () =>
        Effect.gen(function* () {
          const { spans, recording } = recordingTracer()
          const blocked = yield* blockAThread
          const waiting = yield* Effect.forkChild(
            Blocking.run(T.square, 3).pipe(Effect.provideService(Tracer.Tracer, recording))
          )
          yield* eventLoopTurn
          assert.deepStrictEqual(spans, [], "no span while the call waits")
          yield* Fiber.interrupt(waiting)
          const task = spans.find((span) => span.name === "Blocking.run square")!
          assert.strictEqual(task.status._tag === "Ended" && Exit.hasInterrupts(task.status.exit), true)
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          assert.strictEqual(yield* Blocking.run(T.square, 4), 16)
        })
      )

      it.effect("records queue length and utilisation as gauges, queue wait and run time per task as histograms", () =>
        Effect.gen(function* () {
          const runsBefore = yield* counterValue(NodeBlocking.metrics.runTime)
          const waitsBefore = yield* counterValue(NodeBlocking.metrics.queueWait)
          const blocked = yield* blockAThread
          const squares = yield* Effect.forkChild(
            Effect.forEach([1, 2, 3], (n) => Blocking.run(T.square, n), { concurrency: "unbounded" })
          )
          yield* eventLoopTurn
          assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.queueLength), 3, "1 queued + 2 waiting for room")
          assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.utilization), 1)
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
          assert.deepStrictEqual(yield* Fiber.join(squares), [1, 4, 9])
          yield* eventLoopTurn
          assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.queueLength), 0)
          assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.utilization), 0)
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.runTime)) - runsBefore, 4)
          assert.strictEqual((yield* counterValue(NodeBlocking.metrics.queueWait)) - waitsBefore, 4)
        })
      )
    })
  })

  it.effect("updates the queue gauge when queued callers are interrupted", () =>
    withPool({ maxWorkers: 1, maxTasksPerWorker: 1, maxQueue: 1 })(
      Effect.gen(function* () {
        yield* blockAThread
        const callers = yield* Effect.forEach([1, 2, 3], (n) => Effect.forkChild(Blocking.run(T.square, n)))
        yield* eventLoopTurn
        assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.queueLength), 3)
        yield* Fiber.interruptAll(callers)
        yield* eventLoopTurn
        assert.strictEqual(yield* gaugeValue(NodeBlocking.metrics.queueLength), 0)
      })
    )
  )

  describe("named pools", () => {
    it.effect("report their metrics apart, under a pool attribute", () =>
      Effect.gen(function* () {
        const runs = (pool: string) =>
          counterValue(
            Metric.withAttributes(NodeBlocking.metrics.runTime, { pool }) as typeof NodeBlocking.metrics.runTime
          )
        const [aBefore, bBefore] = [yield* runs("a"), yield* runs("b")]
        const squares = (name: string, n: number) =>
          Effect.forEach(
            Array.from({ length: n }, (_, i) => i),
            (i) => Blocking.run(T.square, i)
          ).pipe(Effect.provide(NodeBlocking.layer({ name, maxWorkers: 1 })))
        yield* squares("a", 3)
        yield* squares("b", 2)
        assert.strictEqual((yield* runs("a")) - aBefore, 3)
        assert.strictEqual((yield* runs("b")) - bBefore, 2)
      })
    )

    it.effect("sizes a pool to the available parallelism by default (one busy thread = 1/n utilisation)", () =>
      withPool({ name: "default-size" })(
        Effect.gen(function* () {
          const utilization = Metric.withAttributes(NodeBlocking.metrics.utilization, {
            pool: "default-size"
          }) as typeof NodeBlocking.metrics.utilization
          const blocked = yield* blockAThread
          assert.strictEqual(yield* gaugeValue(utilization), 1 / availableParallelism())
          release(blocked.flags)
          yield* Fiber.join(blocked.fiber)
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
      runFixture("closeAndExit.ts").pipe(
        Effect.map((stdout) => assert.deepStrictEqual(JSON.parse(stdout), { closed: true, stuck: "failed" }))
      )
    )
  })
})
