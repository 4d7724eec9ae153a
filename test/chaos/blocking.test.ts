// Chaos on the worker-thread executor: rounds of well-behaved tasks mixed at random with hostile
// ones (throwing every kind of value from the handler, from timers, microtasks and floating
// promises; returning values that cannot be sent back; exiting the thread; allocating past
// `resourceLimits`), with single tasks and whole batches interrupted, and the pool closed
// mid-batch; and the handlers the calling thread survives, on the inline executor. Invariants, not timings: the process
// survives; every task ends exactly once, with a success or a typed failure (never a defect);
// the pool's gauges go back to zero and its crash counter accounts for every thread death; no
// thread or fiber outlives its round; the heap after GC returns to within 10% of its size after
// a warm-up round.
import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Cause, Effect, Exit, Fiber, Layer, Metric, Scope } from "effect"
import { fiberCounter } from "../support/fibers.ts"
import {
  announce,
  at,
  eventually,
  heapAfterGc,
  nothingOutlived,
  osThreads,
  type Random,
  random,
  rounds,
  watchingProcess
} from "./chaos.ts"
import { category, type Failure, inlineSpec, judge, outcome, runSpec, type Spec, taskSpec } from "./tasks.ts"

announce("test/chaos/blocking.test.ts")

const ROUNDS = 10
const ROUNDS_MILLIS = 8_000
const HEAP_LIMIT_MB = 64

type Ending = "join" | "interrupt-batch" | "close-mid-batch"

interface Round {
  readonly name: string
  readonly limited: boolean
  readonly shutdown: "drain" | "cancel"
  readonly ending: Ending
  readonly specs: ReadonlyArray<{ readonly spec: Spec; readonly interruptAfter: number | undefined }>
}

const plan = (rng: Random, index: number): Round => {
  const limited = rng.chance(0.5)
  const count = rng.int(12, 24)
  const specs = Array.from({ length: count }, () => {
    const spec = taskSpec(rng, 0.35, limited)
    return { spec, interruptAfter: rng.chance(0.15) ? rng.int(0, 100) : undefined }
  })
  return {
    name: `chaos-${index}`,
    limited,
    shutdown: rng.pick(["drain", "cancel"] as const),
    ending: rng.pick(["join", "join", "join", "interrupt-batch", "close-mid-batch", "close-mid-batch"] as const),
    specs
  }
}

const gauge = (metric: Metric.Metric<number, Metric.GaugeState<number>>, pool: string) =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { pool })), (state) => state.value)

/** Outcomes seen over the run, by kind, for the log: shows what the mix reached. */
const tally = new Map<string, number>()
const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1)

/** One round: a pool, a batch of tasks, its ending, and the invariants. */
const round = (index: number, rng: Random, threadsBefore: number | undefined) =>
  Effect.gen(function* () {
    const { name, limited, shutdown, ending, specs } = plan(rng, index)
    const where = (what: string) => at(`round ${index} (${ending}, ${shutdown}): ${what}`)
    const fibers = fiberCounter()
    const crashes = Metric.withAttributes(NodeBlocking.metrics.crashes, { pool: name })
    const crashesBefore = (yield* Metric.value(crashes)).count
    const poolScope = yield* Scope.make()
    const exits = specs.map((): Array<Exit.Exit<unknown, Failure>> => [])
    const interrupted = specs.map(() => false)
    let shutDown = false

    const body = Effect.gen(function* () {
      const context = yield* Layer.buildWithScope(
        NodeBlocking.layer({
          name,
          maxWorkers: 2,
          minWorkers: rng.int(0, 1),
          maxTasksPerWorker: rng.pick([1, 4, 64]),
          gracePeriod: "100 millis",
          timeout: "5 seconds",
          shutdown,
          crashLoop: { deaths: rng.pick([2, 3, 50]), cooldown: "300 millis" },
          ...(limited ? { resourceLimits: { maxOldGenerationSizeMb: HEAP_LIMIT_MB } } : {})
        }),
        poolScope
      )
      const tasks = yield* Effect.forEach(specs, ({ spec }, i) =>
        runSpec(spec).pipe(
          Effect.onExit((exit) => Effect.sync(() => exits[i]?.push(exit))),
          Effect.provideContext(context),
          Effect.forkChild
        )
      )
      yield* Effect.forEach(specs, ({ interruptAfter }, i) => {
        const task = tasks[i]
        if (interruptAfter === undefined || task === undefined) return Effect.void
        return Effect.sleep(interruptAfter).pipe(
          Effect.andThen(Effect.sync(() => (interrupted[i] = true))),
          Effect.andThen(Fiber.interrupt(task)),
          Effect.forkChild
        )
      })
      return tasks
    })

    const closePool = Effect.gen(function* () {
      shutDown = true
      // Bounded: every task has a run timeout, so a drain ends; a close that hangs is a defect.
      const closed = yield* Scope.close(poolScope, Exit.void).pipe(Effect.timeoutOption("20 seconds"))
      assert.isTrue(closed._tag === "Some", where("the pool closed"))
    })

    const { processErrors } = yield* watchingProcess(
      Effect.gen(function* () {
        const batch = yield* Effect.forkChild(
          Effect.flatMap(body, (tasks) => Effect.forEach(tasks, Fiber.await, { discard: true }))
        )
        if (ending === "join") {
          const exit = yield* Fiber.await(batch)
          assert.isTrue(Exit.isSuccess(exit), where(`the batch ended: ${String(exit)}`))
          // With every task done the pool is idle: nothing queued, no thread busy.
          let idle = false
          for (let i = 0; i < 500 && !idle; i++) {
            const queued = yield* gauge(NodeBlocking.metrics.queueLength, name)
            const busy = yield* gauge(NodeBlocking.metrics.utilization, name)
            idle = queued === 0 && busy === 0
            if (!idle) yield* Effect.sleep(10)
          }
          assert.isTrue(idle, where("queue length and utilization gauges went back to 0"))
        } else {
          yield* Effect.sleep(rng.int(50, 1500))
          if (ending === "interrupt-batch") {
            yield* Fiber.interrupt(batch)
          } else {
            yield* closePool
            yield* Fiber.await(batch)
          }
        }
        if (!shutDown) yield* closePool
      }).pipe(Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service))
    )

    assert.deepStrictEqual(processErrors, [], where("the main process saw no uncaught error"))
    const batchInterrupted = ending === "interrupt-batch"
    let deaths = 0
    specs.forEach(({ spec }, i) => {
      const ended = exits[i] ?? []
      const what = `task ${i} ${JSON.stringify(spec)}`
      // A task interrupted before its fiber first ran never started: it has no exit.
      if (ended.length === 0 && (batchInterrupted || interrupted[i] === true)) return
      assert.strictEqual(ended.length, 1, where(`${what} ended exactly once`))
      const exit = ended[0]!
      count(`${category(spec)} -> ${outcome(exit)}`)
      const verdict = judge(spec, exit, {
        interrupt: interrupted[i] === true || batchInterrupted,
        // "drain" lets every task finish; "cancel" fails the unfinished ones.
        shutDown: ending === "close-mid-batch" && shutdown === "cancel"
      })
      assert.isUndefined(verdict, where(`${what}: ${verdict}`))
      if (Exit.isFailure(exit)) {
        const found = Cause.findError(exit.cause)
        if (
          found._tag === "Success" &&
          found.success._tag === "WorkerDiedError" &&
          found.success.reason !== "crash-loop"
        )
          deaths++
      }
    })
    // Each thread death fails at most the one task it was running, and is counted as a crash.
    const crashed = (yield* Metric.value(crashes)).count - crashesBefore
    assert.isAtMost(deaths, crashed, where("every WorkerDiedError has a crash behind it"))
    yield* nothingOutlived(fibers, threadsBefore, where)
  })

describe("chaos: NodeBlocking", () => {
  it.live(
    "hostile tasks, interrupts and shutdowns: every task ends once, typed; nothing outlives its round",
    () =>
      Effect.gen(function* () {
        const threads = osThreads()
        // The warm-up round loads what every round needs (modules, libuv's thread pool).
        yield* round(-1, random("blocking warm-up"), undefined)
        const threadsBefore = osThreads()
        const heapBefore = yield* heapAfterGc
        const took = yield* rounds(ROUNDS, ROUNDS_MILLIS, (i) => round(i, random(`blocking ${i}`), threadsBefore))
        const heapAfter = yield* heapAfterGc
        const outcomes = [...tally]
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([key, n]) => `${key} ${n}`)
          .join(", ")
        console.info(
          `[chaos] blocking: ${took.length} rounds (${took.join(", ")} ms) + warm-up; outcomes: ${outcomes}; threads ${threads} -> ${threadsBefore}; heap ${mb(heapBefore)} -> ${mb(heapAfter)} MB`
        )
        assert.isAtMost(heapAfter, heapBefore * 1.1, at("heap after GC within 10% of its size after the warm-up"))
      }),
    { timeout: 90_000 }
  )
})

describe("chaos: Blocking.layerInline", () => {
  it.live("handlers that throw or return anything: every call ends once, typed, and runs can be interrupted", () =>
    Effect.gen(function* () {
      const rng = random("inline")
      const specs = Array.from({ length: 80 }, () => ({
        spec: inlineSpec(rng),
        interruptAfter: rng.chance(0.1) ? rng.int(0, 5) : undefined
      }))
      const exits = specs.map((): Array<Exit.Exit<unknown, Failure>> => [])
      const fibers = fiberCounter()
      const { processErrors } = yield* watchingProcess(
        Effect.gen(function* () {
          const tasks = yield* Effect.forEach(specs, ({ spec }, i) =>
            runSpec(spec).pipe(
              Effect.onExit((exit) => Effect.sync(() => exits[i]?.push(exit))),
              Effect.provide(Blocking.layerInline),
              Effect.forkChild
            )
          )
          yield* Effect.forEach(
            specs,
            ({ interruptAfter }, i) =>
              interruptAfter === undefined
                ? Effect.void
                : Effect.sleep(interruptAfter).pipe(Effect.andThen(Fiber.interrupt(tasks[i]!))),
            { concurrency: "unbounded", discard: true }
          )
          yield* Fiber.awaitAll(tasks)
        }).pipe(Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service))
      )
      assert.deepStrictEqual(processErrors, [], at("inline: the process saw no uncaught error"))
      specs.forEach(({ spec, interruptAfter }, i) => {
        const ended = exits[i] ?? []
        const what = `inline task ${i} ${JSON.stringify(spec)}`
        // A task interrupted before its fiber first ran never started: it has no exit.
        if (ended.length === 0 && interruptAfter !== undefined) return
        assert.strictEqual(ended.length, 1, at(`${what} ended exactly once`))
        const verdict = judge(spec, ended[0]!, { interrupt: interruptAfter !== undefined, shutDown: false })
        assert.isUndefined(verdict, at(`${what}: ${verdict}`))
      })
      assert.isTrue(yield* eventually(() => fibers.active() === 0), at("inline: no fiber outlived the run"))
    })
  )
})

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
