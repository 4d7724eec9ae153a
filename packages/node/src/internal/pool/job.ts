// A job: one `Blocking.run` call as the pool tracks it, from submit to its outcome. A record only:
// the engine is the one module that writes it.
import type * as Blocking from "@volley/core/Blocking"
import type * as Clock from "effect/Clock"
import type { Entry } from "./queue.ts"
import type { Thread } from "./thread.ts"

/**
 * - `queued`: in the pool's queue, waiting for a thread
 * - `waiting`: held back by a full queue ("wait" back-pressure)
 * - `sent`: sent to a thread (running, or waiting behind the jobs sent to it before)
 * - `finished`: its caller has its outcome, or was interrupted
 */
export type JobState = "queued" | "waiting" | "sent" | "finished"

export interface Job extends Entry {
  readonly request: Blocking.Request
  readonly name: string
  readonly module: string
  readonly taskId: number
  /** The caller's Clock: its timeouts run on it (a TestClock in tests). */
  readonly clock: Clock.Clock
  /** Gets the outcome, once. */
  readonly receiver: Blocking.Receiver
  readonly enqueuedAt: number
  state: JobState
  /** Its number on its thread, while `sent`. */
  seq: number
  /** The thread it was last sent to; kept when a death sends it again, so its queue wait counts once. */
  thread: Thread<Job> | undefined
  /** Its thread reported it started (timed jobs only): its queue timeout is over, its run timeout runs. */
  started: boolean
  /** Cancels its queue or run timer. */
  timer: (() => void) | undefined
  /** The number of the Run message that took it to its thread (0 until posted; see `Unreadable`). */
  run: number
  /** Cancels the grace period after an abort. */
  grace: (() => void) | undefined
}
