// Deadlines and cancellation. A job stops for one of three reasons: its caller is interrupted,
// it waited longer than its queue timeout, or it ran longer than its run timeout. Stopping is
// two-phase: a job that has not started is skipped (dropped from the queue, or marked in the
// thread's control buffer so the thread skips it); a running one has its AbortSignal aborted,
// and if it is still running after the grace period its thread is terminated (and replaced).
import * as Blocking from "@volley/core/Blocking"
import type { Engine } from "./engine.ts"
import { after, clear, FINISHED, finish, type Job, QUEUED, SENT, WAITING } from "./job.ts"
import { RING, type ToWorker } from "./messages.ts"
import { terminate } from "./thread.ts"

/** Interruption: a queued job leaves the queue; a running one is aborted, then its thread killed. */
export const cancel = (pool: Engine, job: Job): void => {
  if (job.state === QUEUED || job.state === WAITING) {
    unqueue(pool, job)
    job.state = FINISHED
    clear(job)
    return
  }
  if (job.state !== SENT) return
  job.state = FINISHED
  clear(job)
  stop(pool, job)
}

/** Arms the queue timeout. It runs until the task starts: waiting in a thread's prefetch counts as queued too. */
export const queueDeadline = (pool: Engine, job: Job, timeoutMillis: number): void => {
  job.timer = after(job.clock, timeoutMillis, () => {
    if (job.started) return
    const sent = job.state === SENT
    if (!sent) unqueue(pool, job)
    finish(job, {
      error: new Blocking.TaskTimeoutError({ task: job.name, phase: "queued", timeoutMillis })
    })
    if (sent) stop(pool, job)
  })
}

/** The job is first in its thread's line, so running now: its queue timeout ends, its run timeout starts. */
export const started = (pool: Engine, job: Job): void => {
  if (job.state !== SENT || job.started) return
  job.started = true
  clear(job)
  const timeout = job.request.timeoutMillis ?? pool.options.timeoutMillis
  if (timeout === undefined) return
  job.timer = after(job.clock, timeout, () => {
    if (job.state !== SENT) return
    finish(job, {
      error: new Blocking.TaskTimeoutError({ task: job.name, phase: "running", timeoutMillis: timeout })
    })
    stop(pool, job)
  })
}

// A dispatch round follows: it moves a caller waiting for room up and updates the queue gauge.
const unqueue = (pool: Engine, job: Job): void => {
  if (job.state === QUEUED) pool.queue.remove(job)
  else pool.waiting.remove(job)
  pool.schedule()
}

/** Second phase of cancellation: skip it if not started, else abort, then terminate after the grace period. */
const stop = (pool: Engine, job: Job): void => {
  const slot = job.slot!
  Atomics.store(slot.control, 1 + (job.seq % RING), job.seq)
  if (Atomics.load(slot.control, 0) !== job.seq && slot.inFlight[0] !== job) return
  slot.thread.postMessage({ _tag: "Abort", seq: job.seq } satisfies ToWorker)
  job.grace = after(job.clock, pool.options.gracePeriodMillis, () => {
    if (slot.inFlight.includes(job)) void terminate(slot)
  })
}
