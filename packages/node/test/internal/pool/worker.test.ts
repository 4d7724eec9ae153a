import { assert, describe, it } from "@effect/vitest"
import { Blocking } from "@volley/core"
import { type Duration, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { waitForFlag } from "../../../../core/test/shared/blockingSuite.ts"
import * as P from "../../fixtures/poolTasks.ts"
import { blockFlags, eventLoopTurn, realSleep, release, settles, withPool } from "./helpers.ts"

/** Moves the TestClock on by `step` until `fiber` finishes, for at most 2 s of real time. */
const adjustUntilSettled = (fiber: Fiber.Fiber<unknown, unknown>, step: Duration.Input) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200 && fiber.pollUnsafe() === undefined; i++) {
      yield* TestClock.adjust(step)
      yield* realSleep(10)
    }
    return fiber.pollUnsafe() !== undefined
  })

const runningTimeout = (error: unknown) =>
  error instanceof Blocking.TaskTimeoutError && `${error.phase} ${error.timeoutMillis}`

describe("pool worker", () => {
  it.effect("reports a finished task before it starts one with a run timeout, so the timeout is armed", () =>
    withPool({ maxWorkers: 1 })(
      Effect.gen(function* () {
        // Both tasks run once: a task never measured is not sent ahead.
        const released = yield* blockFlags
        release(released)
        yield* Blocking.run(P.block, released.buffer as SharedArrayBuffer)
        yield* Blocking.run(P.threadId, undefined)
        const flags = yield* blockFlags
        // Sent in one batch: the thread would hold the no-op's result back while the blocked task runs.
        const noop = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
        const timed = yield* Effect.forkChild(
          Blocking.run(P.block, flags.buffer as SharedArrayBuffer, { timeout: "300 millis" })
        )
        yield* waitForFlag(flags, 0)
        assert.isTrue(yield* settles(noop), "the no-op's result arrived while the next task runs")
        yield* TestClock.adjust("299 millis")
        assert.isUndefined(timed.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        assert.strictEqual(runningTimeout(yield* Effect.flip(Fiber.join(timed))), "running 300")
      })
    )
  )

  it.effect("reports a task skipped after a cancel before it starts one with a run timeout", () =>
    withPool({ maxWorkers: 1 })(
      Effect.gen(function* () {
        // Released, `P.block` returns at once: an average run time under 0.25 ms (the first run, which
        // imports the module, included) lets the timed task be sent ahead behind two others.
        const released = yield* blockFlags
        release(released)
        for (let i = 0; i < 60; i++) yield* Blocking.run(P.block, released.buffer as SharedArrayBuffer)
        // Run once, so that it is sent ahead too (a task never measured is not).
        yield* Blocking.run(P.threadId, undefined)
        const first = yield* blockFlags
        const running = yield* Effect.forkChild(Blocking.run(P.block, first.buffer as SharedArrayBuffer))
        yield* waitForFlag(first, 0)
        const skipped = yield* Effect.forkChild(Blocking.run(P.threadId, undefined))
        const flags = yield* blockFlags
        const timed = yield* Effect.forkChild(
          Blocking.run(P.block, flags.buffer as SharedArrayBuffer, { timeout: "300 millis" })
        )
        yield* eventLoopTurn
        yield* Fiber.interrupt(skipped)
        release(first)
        yield* Fiber.join(running)
        yield* waitForFlag(flags, 0)
        assert.isTrue(yield* adjustUntilSettled(timed, "300 millis"), "the run timeout fired")
        assert.strictEqual(runningTimeout(yield* Effect.flip(Fiber.join(timed))), "running 300")
      })
    )
  )
})
