// Entry point of every pool thread. Runs the tasks it receives strictly one at a time, in order,
// so the pool always knows which task is running (control[0]) and who to blame if the thread dies.
// Results are sent back in batches: at most every FLUSH_MS, every MAX_BATCH results, or when the
// local queue runs dry.

import { parentPort, workerData } from "node:worker_threads"
import { Blocking } from "@volley/core"
import { type FromWorker, type Result, RING, type RunJob, type ToWorker, type WorkerData } from "./messages.ts"

const FLUSH_MS = 1
const MAX_BATCH = 64

const port = parentPort!
const control = new Int32Array((workerData as WorkerData).control)
const queue: Array<RunJob | undefined> = []
let head = 0
let draining = false
let results: Array<Result> = []
let transfer: Array<Transferable> = []
const controllers = new Map<number, AbortController>()
const aborted = new Set<number>()
const modules = new Map<string, Map<string, Blocking.AnyTask> | Error>()

port.on("message", (message: ToWorker) => {
  if (message._tag === "Run") {
    for (const job of message.jobs) queue.push(job)
    if (!draining) void drain()
  } else if (message.seq === Atomics.load(control, 0)) {
    const controller = controllers.get(message.seq)
    if (controller === undefined) aborted.add(message.seq)
    else controller.abort()
  }
})

const drain = async () => {
  draining = true
  let flushAt = performance.now() + FLUSH_MS
  while (head < queue.length) {
    const job = queue[head]!
    queue[head++] = undefined
    const seq = job[0]
    Atomics.store(control, 0, seq)
    // Dekker-style handshake with the pool's cancel: one of us sees the other's write.
    if (Atomics.load(control, 1 + (seq % RING)) === seq) {
      Atomics.store(control, 0, 0)
      results.push([seq, { _tag: "Cancelled" }, 0])
      continue
    }
    const start = performance.now()
    const reply = await runJob(job)
    Atomics.store(control, 0, 0)
    controllers.delete(seq)
    aborted.delete(seq)
    const now = performance.now()
    results.push([seq, reply, now - start])
    if (results.length >= MAX_BATCH || now >= flushAt) {
      flush()
      flushAt = now + FLUSH_MS
    }
  }
  queue.length = 0
  head = 0
  flush()
  draining = false
}

const runJob = (job: RunJob): Result[1] | Promise<Result[1]> => {
  const tasks = modules.get(job[1])
  if (tasks === undefined) return load(job[1]).then(() => runJob(job))
  if (tasks instanceof Error) return { _tag: "NotFound", reason: `cannot import the module: ${tasks.message}` }
  const task = tasks.get(job[2])
  if (task === undefined) return { _tag: "NotFound", reason: `the module exports no task named "${job[2]}"` }
  return Blocking.invoke(task, job[3], context(job[0], job[4], job[5]), transfer)
}

const load = async (url: string) => {
  try {
    const namespace: Record<string, unknown> = await import(url)
    const tasks = new Map<string, Blocking.AnyTask>()
    for (const value of Object.values(namespace)) if (Blocking.isTask(value)) tasks.set(value.name, value)
    modules.set(url, tasks)
  } catch (error) {
    modules.set(url, error instanceof Error ? error : new Error(String(error)))
  }
}

// Most handlers never look at the signal; an AbortController per task would cost more than a no-op task.
const context = (seq: number, traceId: string | undefined, spanId: string | undefined): Blocking.TaskContext => ({
  get signal() {
    let controller = controllers.get(seq)
    if (controller === undefined) {
      controller = new AbortController()
      controllers.set(seq, controller)
      if (aborted.has(seq)) controller.abort()
    }
    return controller.signal
  },
  traceId,
  spanId
})

const flush = () => {
  if (results.length === 0) return
  try {
    port.postMessage({ _tag: "Done", results } satisfies FromWorker, transfer as never)
  } catch {
    // Some result cannot be cloned (a function, a symbol): send them one by one to find it.
    for (const result of results) {
      try {
        port.postMessage({ _tag: "Done", results: [result] } satisfies FromWorker)
      } catch (error) {
        const reason = `cannot be sent back: ${error instanceof Error ? error.message : String(error)}`
        port.postMessage({
          _tag: "Done",
          results: [[result[0], { _tag: "InvalidResult", reason }, result[2]]]
        } satisfies FromWorker)
      }
    }
  }
  results = []
  transfer = []
}

port.postMessage({ _tag: "Ready" } satisfies FromWorker)
