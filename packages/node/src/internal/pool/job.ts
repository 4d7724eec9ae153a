// A job: one `Blocking.run` call as the pool tracks it, from submit to its outcome, and the
// Clock-driven timers that jobs and threads use.
import type * as Blocking from "@volley/core/Blocking"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Entry } from "./queue.ts"
import type { Slot } from "./thread.ts"

export type Outcome = { readonly reply: Blocking.Reply } | { readonly error: Blocking.BlockingError }

export const QUEUED = 0
export const WAITING = 1 // waiting for room in a full queue ("wait" back-pressure)
export const SENT = 2
export const FINISHED = 3

export interface Job extends Entry {
  readonly request: Blocking.Request
  readonly name: string
  readonly module: string
  readonly taskId: number
  readonly clock: Clock.Clock
  readonly done: (outcome: Outcome) => void
  state: number
  seq: number
  slot: Slot | undefined
  enqueuedAt: number
  started: boolean
  timer: (() => void) | undefined
  grace: (() => void) | undefined
}

/** Settles the job: its caller resumes with `outcome`. */
export const finish = (job: Job, outcome: Outcome): void => {
  job.state = FINISHED
  clear(job)
  job.done(outcome)
}

/** Cancels the job's queue or run timer. */
export const clear = (job: Job): void => {
  job.timer?.()
  job.timer = undefined
}

/** Calls `f` after `millis` on `clock` (a TestClock in tests); returns a canceller. */
export const after = (clock: Clock.Clock, millis: number, f: () => void): (() => void) => {
  const fiber = Effect.runFork(clock.sleep(Duration.millis(millis)))
  fiber.addObserver((exit) => {
    if (exit._tag === "Success") f()
  })
  return () => fiber.interruptUnsafe()
}
