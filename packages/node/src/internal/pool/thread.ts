// One pool thread: starting it, letting it idle (the thread is unref'd, but its idleTimeout timer,
// on the Effect clock so that tests can drive it, keeps the process alive until it fires or the
// layer's scope closes), terminating it.
import { Worker } from "node:worker_threads"
import type { Engine, EngineOptions } from "./engine.ts"
import { after, type Job } from "./job.ts"
import { RING } from "./messages.ts"

export interface Slot {
  readonly thread: Worker
  readonly control: Int32Array
  readonly inFlight: Array<Job>
  /** Task ids this thread has been told about. */
  readonly known: Set<number>
  outbox: Array<Job>
  nextSeq: number
  ready: boolean
  terminating: boolean
  outOfMemory: boolean
  lastError: string | undefined
  idleTimer: (() => void) | undefined
}

/** Starts a thread; the engine listens for its messages and its exit. */
export const start = (options: EngineOptions): Slot => {
  const control = new Int32Array(new SharedArrayBuffer(4 * (1 + RING)))
  const thread = new Worker(options.workerUrl, {
    workerData: { control: control.buffer },
    ...(options.resourceLimits === undefined ? {} : { resourceLimits: options.resourceLimits })
  })
  const slot: Slot = {
    thread,
    control,
    inFlight: [],
    known: new Set(),
    outbox: [],
    nextSeq: 1,
    ready: false,
    terminating: false,
    outOfMemory: false,
    lastError: undefined,
    idleTimer: undefined
  }
  // Kept for the exit that follows: it tells an out-of-memory death from a plain exit. `error` is
  // whatever the thread threw, uncaught: null, undefined and symbols included.
  thread.on("error", (error: unknown) => {
    slot.outOfMemory ||= isObject(error) && error.code === "ERR_WORKER_OUT_OF_MEMORY"
    slot.lastError = describeThrown(error)
  })
  return slot
}

/** The thread has loaded its entry module and takes tasks. */
export const ready = (pool: Engine, slot: Slot): void => {
  pool.starting--
  slot.ready = true
  pool.breaker.threadReady()
  becameIdle(pool, slot)
  pool.schedule()
}

export const becameIdle = (pool: Engine, slot: Slot): void => {
  if (slot.inFlight.length > 0 || slot.terminating) return
  if (slot.ready && slot.idleTimer === undefined) {
    slot.thread.unref()
    slot.idleTimer = after(pool.options.clock, pool.options.idleTimeoutMillis, () => {
      slot.idleTimer = undefined
      if (slot.inFlight.length === 0 && live(pool) > pool.options.minWorkers) void terminate(slot)
    })
  }
}

/**
 * Threads that stay: not those terminating (timers that fire together would each count the
 * others and end them all), nor those starting (they may die before they are ready).
 */
const live = (pool: Engine): number => {
  let n = 0
  for (const slot of pool.slots) if (slot.ready && !slot.terminating) n++
  return n
}

export const terminate = (slot: Slot): Promise<unknown> => {
  slot.terminating = true
  slot.idleTimer?.()
  slot.idleTimer = undefined
  return slot.thread.terminate()
}

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/** What a thread's uncaught throw says about itself; never throws (the value is a deserialized clone). */
const describeThrown = (error: unknown): string => {
  try {
    if (isObject(error) && typeof error.message === "string") return error.message
    return `uncaught ${typeof error === "symbol" ? error.toString() : String(error)}`
  } catch {
    return `uncaught ${Object.prototype.toString.call(error)}`
  }
}
