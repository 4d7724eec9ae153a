// A randomized model test of the pool: random interleavings of submits (tasks that succeed, fail
// typed, throw, kill their thread, block until aborted, or run past a timeout), interrupts, clock
// moves and a shutdown, each against a reference model of the outcomes every task may end with.
// Every task must end exactly once, with an outcome the model allows. The seed is logged; set
// VOLLEY_MODEL_SEED to replay a run.
import { assert, describe, it } from "@effect/vitest"
import * as Blocking from "@volley/core/Blocking"
import * as NodeBlocking from "@volley/node/NodeBlocking"
import { Cause, Effect, Exit, Fiber, Option, Scope } from "effect"
import { TestClock } from "effect/testing"
import fc from "fast-check"
import * as T from "../../../../core/test/fixtures/blockingTasks.ts"
import * as P from "../../fixtures/poolTasks.ts"
import { realSleep } from "./helpers.ts"

type Kind = "square" | "typed" | "throws" | "exit" | "block" | "timed"
type Step =
  | { readonly op: "submit"; readonly tasks: ReadonlyArray<{ readonly kind: Kind; readonly n: number }> }
  | { readonly op: "interrupt"; readonly target: number }
  | { readonly op: "turn" }
  | { readonly op: "clock" }

interface Program {
  readonly maxTasksPerWorker: number
  readonly steps: ReadonlyArray<Step>
  readonly shutdown: "drain" | "cancel"
}

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 5,
    // A burst: tasks submitted in one tick travel to the threads together.
    arbitrary: fc.record({
      op: fc.constant("submit" as const),
      tasks: fc.array(
        fc.record({
          // Mostly short tasks, with crashes among them: the interleavings that need the most care.
          kind: fc.constantFrom<Kind>(
            "square",
            "square",
            "square",
            "exit",
            "exit",
            "typed",
            "throws",
            "block",
            "timed"
          ),
          n: fc.integer({ min: 1, max: 100 })
        }),
        { minLength: 1, maxLength: 6 }
      )
    })
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("interrupt" as const), target: fc.nat() }) },
  { weight: 2, arbitrary: fc.constant({ op: "turn" as const }) },
  { weight: 1, arbitrary: fc.constant({ op: "clock" as const }) }
)

const program: fc.Arbitrary<Program> = fc.record({
  maxTasksPerWorker: fc.integer({ min: 1, max: 4 }),
  steps: fc.array(step, { minLength: 1, maxLength: 12 }),
  shutdown: fc.constantFrom("drain" as const, "cancel" as const)
})

/** What a task ends with when nothing stops it; `undefined`: it never ends by itself. */
const natural = (kind: Kind, n: number): string | undefined => {
  switch (kind) {
    case "square":
      return `success ${n * n}`
    case "typed":
      return "Negative"
    case "throws":
      return "HandlerError"
    case "exit":
      return "WorkerDiedError exit"
    case "block":
      return undefined
    case "timed":
      return "TaskTimeoutError running"
  }
}

const run = (kind: Kind, n: number): Effect.Effect<unknown, unknown, Blocking.BlockingExecutor> => {
  switch (kind) {
    case "square":
      return Blocking.run(T.square, n)
    case "typed":
      return Blocking.run(T.square, -n)
    case "throws":
      return Blocking.run(T.explode, "model")
    case "exit":
      return Blocking.run(P.exit, 3)
    case "block":
      return Blocking.run(T.waitForAbort, new SharedArrayBuffer(8))
    case "timed":
      return Blocking.run(T.waitForAbort, new SharedArrayBuffer(8), { timeout: "1 second" })
  }
}

/** The observable outcome of a task, in the model's words. */
const outcome = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return `success ${String(exit.value)}`
  if (Cause.hasInterruptsOnly(exit.cause)) return "interrupted"
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isNone(error)) return `defect ${Cause.pretty(exit.cause)}`
  const e = error.value as { _tag?: string; reason?: string; phase?: string }
  if (e._tag === "WorkerDiedError") return `WorkerDiedError ${e.reason}`
  if (e._tag === "TaskTimeoutError") return `TaskTimeoutError ${e.phase}`
  return String(e._tag)
}

/**
 * Moves the TestClock on, a second at a time, while threads run in real time (restarting a thread
 * that a task killed takes a while), until `done` or 60 s of real time.
 */
const advanceUntil = (done: () => boolean) =>
  Effect.gen(function* () {
    const deadline = performance.now() + 60_000
    while (!done() && performance.now() < deadline) {
      yield* TestClock.adjust("1 second")
      yield* realSleep(10)
    }
  })

interface Submitted {
  readonly kind: Kind
  readonly n: number
  readonly fiber: Fiber.Fiber<unknown, unknown>
  interrupted: boolean
}

const runProgram = (p: Program) =>
  Effect.gen(function* () {
    const poolScope = yield* Scope.make()
    const executor = yield* NodeBlocking.make({
      maxWorkers: 2,
      maxTasksPerWorker: p.maxTasksPerWorker,
      shutdown: p.shutdown
    }).pipe(Scope.provide(poolScope))
    const provide = Effect.provideService(Blocking.BlockingExecutor, executor)
    // A finished task makes its module sound: its threads' deaths are single crashes, never a crash loop.
    yield* provide(Blocking.run(P.threadId, undefined))
    const submitted: Array<Submitted> = []
    for (const s of p.steps) {
      if (s.op === "submit") {
        for (const { kind, n } of s.tasks) {
          const fiber = yield* Effect.forkDetach(provide(run(kind, n)), { startImmediately: true })
          submitted.push({ kind, n, fiber, interrupted: false })
        }
      } else if (s.op === "interrupt" && submitted.length > 0) {
        const target = submitted[s.target % submitted.length]!
        if (target.fiber.pollUnsafe() === undefined) target.interrupted = true
        yield* Fiber.interrupt(target.fiber)
      } else if (s.op === "turn") {
        yield* realSleep(2)
      } else if (s.op === "clock") {
        yield* TestClock.adjust("1 second")
      }
    }
    const pending = () => submitted.filter((t) => t.fiber.pollUnsafe() === undefined)
    if (p.shutdown === "drain") {
      // Blocked tasks never end by themselves: interrupt them. Timed ones end once they start and
      // a second passes; the pool must still answer.
      for (const t of pending()) {
        if (t.kind === "block") {
          t.interrupted = true
          yield* Fiber.interrupt(t.fiber)
        }
      }
      const answer = yield* Effect.forkDetach(provide(Blocking.run(T.square, 3)), { startImmediately: true })
      yield* advanceUntil(() => pending().length === 0 && answer.pollUnsafe() !== undefined)
      assert.deepStrictEqual(answer.pollUnsafe(), Exit.succeed(9), "the pool still answers")
    }
    const closing = yield* Effect.forkDetach(Scope.close(poolScope, Exit.void))
    // A drain waits for what runs; a cancel fails it. Grace periods run on the TestClock.
    yield* advanceUntil(() => closing.pollUnsafe() !== undefined)
    assert.isDefined(closing.pollUnsafe(), "the pool closed")
    return yield* Effect.forEach(submitted, (t) =>
      Effect.map(Fiber.await(t.fiber), (exit) => {
        const allowed = new Set<string>()
        const end = natural(t.kind, t.n)
        if (end !== undefined) allowed.add(end)
        if (t.interrupted) allowed.add("interrupted")
        if (p.shutdown === "cancel") allowed.add("ExecutorShutDownError")
        return {
          task: `${t.kind}(${t.n})${t.interrupted ? " interrupted" : ""}`,
          got: outcome(exit),
          allowed: [...allowed]
        }
      })
    )
  })

describe("pool model", () => {
  it.effect(
    "ends every task exactly once with the outcome the model allows, under random submits, interrupts, crashes, timeouts and shutdowns",
    () =>
      Effect.gen(function* () {
        const seed = Number(process.env.VOLLEY_MODEL_SEED ?? Date.now() % 2 ** 31)
        console.log(`pool model: VOLLEY_MODEL_SEED=${seed}`)
        const programs = fc.sample(program, { seed, numRuns: 8 })
        for (const [index, p] of programs.entries()) {
          const results = yield* runProgram(p)
          for (const r of results) {
            assert.include(
              r.allowed,
              r.got,
              `VOLLEY_MODEL_SEED=${seed}, program ${index} ${JSON.stringify(p)}: ${r.task} ended with ${r.got}`
            )
          }
        }
      }),
    { timeout: 300_000 }
  )
})
