// Crash recovery: a thread exited. If it died unexpectedly, the job it was running (control[0])
// fails with WorkerDiedError; every other job it held (sent ahead, or finished but not yet
// reported) is queued again at the front, to run on another thread. Deaths feed the
// crash-loop breakers; the dispatch round that follows tops the pool up to minWorkers.
import * as Blocking from "@volley/core/Blocking"
import type { Engine } from "./engine.ts"
import { clear, finish, type Job, QUEUED, SENT } from "./job.ts"
import type { Slot } from "./thread.ts"

export const exited = (pool: Engine, slot: Slot, code: number): void => {
  pool.slots.delete(slot)
  slot.idleTimer?.()
  if (!slot.ready) pool.starting--
  const intended = slot.terminating
  if (!intended) pool.options.observe.crash()
  const running = Atomics.load(slot.control, 0)
  let culprit: Job | undefined
  for (const job of slot.inFlight) {
    job.grace?.()
    if (job.state !== SENT) continue
    if (!intended && job.seq === running) {
      culprit = job
      finish(job, {
        error: new Blocking.WorkerDiedError({
          task: job.name,
          reason: slot.outOfMemory ? "out-of-memory" : "exit",
          exitCode: code,
          detail: slot.lastError ?? `the thread exited while running the task`
        })
      })
    } else {
      // It never ran (or its result was lost with the thread): run it on another thread.
      if (job.started) clear(job)
      job.state = QUEUED
      job.started = false
      pool.queue.pushFront(job)
    }
  }
  if (!intended) countDeath(pool, slot, culprit, slot.lastError ?? `exit code ${code}`)
  pool.schedule()
}

export const crashLoop = (task: string, detail: string) =>
  new Blocking.WorkerDiedError({ task, reason: "crash-loop", exitCode: undefined, detail })

const countDeath = (pool: Engine, slot: Slot, culprit: Job | undefined, cause: string): void => {
  if (!slot.ready) {
    const opened = pool.breaker.startupDeath(cause)
    if (opened !== undefined) failQueued(pool, () => true, opened)
  } else if (culprit !== undefined) {
    const opened = pool.breaker.moduleDeath(culprit.module, cause)
    if (opened !== undefined) failQueued(pool, (job) => job.module === culprit.module, opened)
  }
}

/** The breaker opened: queued jobs it refuses fail now rather than start another doomed thread. */
const failQueued = (pool: Engine, which: (job: Job) => boolean, detail: string): void => {
  for (const queue of [pool.queue, pool.waiting]) {
    const kept: Array<Job> = []
    for (const job of queue.drain()) {
      if (which(job)) finish(job, { error: crashLoop(job.name, detail) })
      else kept.push(job)
    }
    for (const job of kept) queue.push(job)
  }
}
