// Dispatch: moves queued jobs onto threads. Each thread gets a window of jobs sent ahead (many for
// short tasks, one for long ones) and runs them one at a time; jobs travel in batches, one
// message per thread per pump, in the flat wire format of messages.ts.
import * as Blocking from "@volley/core/Blocking"
import { started } from "./cancellation.ts"
import type { Engine } from "./engine.ts"
import { finish, type Job, QUEUED, SENT } from "./job.ts"
import type { ToWorker } from "./messages.ts"
import { becameIdle, type Slot } from "./thread.ts"

/** One round of dispatch, run in a microtask after anything that changes the queue or the threads. */
export const pump = (pool: Engine): void => {
  dispatch(pool)
  const max = pool.options.maxTasksPerWorker
  const wanted = Math.min(
    pool.options.maxWorkers - pool.slots.size,
    pool.queue.length + pool.waiting.length - pool.starting
  )
  for (let i = 0; i < wanted; i++) pool.spawn()
  topUp(pool)
  // Each post may wake a sleeping thread, which on a busy machine costs far more than the
  // message: hold jobs back while the thread still has plenty posted, so they travel in few,
  // large batches (the next batch of results triggers the send).
  for (const slot of pool.slots) {
    const posted = slot.inFlight.length - slot.outbox.length
    if (slot.outbox.length > 0 && (posted * 2 <= max || slot.outbox.length * 2 >= max)) flush(pool, slot)
  }
  for (const slot of pool.slots) if (slot.inFlight.length === 0) becameIdle(pool, slot)
  pool.options.observe.queueLength(pool.queue.length + pool.waiting.length)
  let busy = 0
  for (const slot of pool.slots) if (slot.inFlight.length > 0) busy++
  pool.options.observe.utilization(busy / pool.options.maxWorkers)
  if (pool.drained !== undefined && idle(pool)) pool.drained()
}

/**
 * Sends queued jobs to threads with room (into their outbox; `pump` posts them). Callers waiting
 * for room in a full queue move up as it empties, and are sent too if a thread still has room.
 */
export const dispatch = (pool: Engine): void => {
  const max = pool.options.maxTasksPerWorker
  for (;;) {
    for (let job = pool.queue.peek(); job !== undefined; job = pool.queue.peek()) {
      const avg = pool.avgRunMillis[job.taskId] ?? 1
      const slot = pick(pool, Math.min(max, avg < 0.25 ? max : avg < 2 ? 2 : 1))
      if (slot === undefined) break
      send(pool, slot, pool.queue.shift()!)
    }
    if (pool.waiting.length === 0 || pool.queue.length >= pool.options.maxQueue) return
    while (pool.waiting.length > 0 && pool.queue.length < pool.options.maxQueue) {
      const job = pool.waiting.shift()!
      job.state = QUEUED
      pool.queue.push(job)
    }
  }
}

/**
 * Starts threads up to minWorkers, but not while threads die before they are ready (the start-up
 * breaker is open): the first round after the cool-down tries again. A timer for the cool-down's
 * end would keep the process alive after the pool closes.
 */
const topUp = (pool: Engine): void => {
  if (pool.slots.size >= pool.options.minWorkers || pool.closing || pool.breaker.startupOpen()) return
  while (pool.slots.size < pool.options.minWorkers) pool.spawn()
}

/** Nothing queued, nothing in flight. */
export const idle = (pool: Engine): boolean => {
  if (pool.queue.length > 0 || pool.waiting.length > 0) return false
  for (const slot of pool.slots) if (slot.inFlight.length > 0) return false
  return true
}

/** The ready thread with the fewest jobs in flight, if it has fewer than `window`. */
const pick = (pool: Engine, window: number): Slot | undefined => {
  let best: Slot | undefined
  for (const slot of pool.slots) {
    if (!slot.ready || slot.terminating || slot.inFlight.length >= window) continue
    if (best === undefined || slot.inFlight.length < best.inFlight.length) best = slot
  }
  return best
}

const send = (pool: Engine, slot: Slot, job: Job): void => {
  // A job sent again after its thread died keeps its `slot`: its queue wait was recorded once.
  if (job.slot === undefined) {
    const waited = performance.now() - job.enqueuedAt
    pool.options.observe.queueWait(waited)
    job.request.span.attribute("volley.blocking.queue_wait_ms", waited)
  }
  job.state = SENT
  job.slot = slot
  job.seq = slot.nextSeq
  // Seqs live in an Int32Array slot; wrap before 2^31 (0 means "nothing running").
  slot.nextSeq = slot.nextSeq === 0x7fffffff ? 1 : slot.nextSeq + 1
  if (slot.inFlight.length === 0) {
    slot.thread.ref()
    slot.idleTimer?.()
    slot.idleTimer = undefined
  }
  slot.inFlight.push(job)
  slot.outbox.push(job)
  job.request.span.attribute("volley.blocking.thread_id", slot.thread.threadId)
}

const flush = (pool: Engine, slot: Slot): void => {
  const jobs = slot.outbox
  slot.outbox = []
  const transfer: Array<Transferable> = []
  for (const job of jobs) for (const buffer of job.request.transfer) transfer.push(buffer)
  try {
    post(pool, slot, jobs, transfer)
  } catch {
    // One payload cannot be cloned: send them one at a time and fail only the culprits.
    for (const job of jobs) {
      try {
        post(pool, slot, [job], job.request.transfer)
      } catch (error) {
        slot.inFlight.splice(slot.inFlight.indexOf(job), 1)
        const reason = `cannot be sent to a thread: ${error instanceof Error ? error.message : String(error)}`
        finish(job, { error: new Blocking.InvalidPayloadError({ task: job.name, reason }) })
      }
    }
    if (slot.inFlight.length === 0) becameIdle(pool, slot)
  }
  // The first job in flight is running now: its run timeout starts.
  const first = slot.inFlight[0]
  if (first !== undefined) started(pool, first)
}

const post = (pool: Engine, slot: Slot, jobs: ReadonlyArray<Job>, transfer: ReadonlyArray<Transferable>): void => {
  const tasks: Array<readonly [number, string, string]> = []
  // Packed, not `new Array(n)`: holey arrays take the structured-clone slow path.
  const flat: Array<unknown> = []
  for (const job of jobs) {
    if (!slot.known.has(job.taskId) && !tasks.some((t) => t[0] === job.taskId)) {
      tasks.push([job.taskId, job.module, job.name])
    }
    const timed = (job.request.timeoutMillis ?? pool.options.timeoutMillis) === undefined ? 0 : 1
    flat.push(job.seq, job.taskId, job.request.payload, job.request.span.traceId, job.request.span.spanId, timed)
  }
  slot.thread.postMessage({ _tag: "Run", tasks, jobs: flat } satisfies ToWorker, transfer as never)
  for (const task of tasks) slot.known.add(task[0])
}
