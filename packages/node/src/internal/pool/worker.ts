// Entry point of every pool thread. Runs the tasks it receives strictly one at a time, in order,
// so the pool always knows which task is running (control[0]) and who to blame if the thread dies.
// Results are sent back in batches: at most every FLUSH_MS, every MAX_BATCH results, when the
// local queue runs dry, or before a job with a run timeout starts.

import { parentPort, workerData } from "node:worker_threads"
import type * as Blocking from "@volley/core/Blocking"
import {
  type FromWorker,
  JOB_FIELDS,
  REPLY,
  RESULT_FIELDS,
  RING,
  SUCCESS,
  type ToWorker,
  type WireReply,
  type WorkerData
} from "./messages.ts"

const FLUSH_MS = 1
const MAX_BATCH = 64

const port = parentPort!
const control = new Int32Array((workerData as WorkerData).control)
const queue: Array<unknown> = []
let head = 0
let draining = false
let results: Array<unknown> = []
let transfer: Array<Transferable> = []
const controllers = new Map<number, AbortController>()
const aborted = new Set<number>()
const modules = new Map<string, Map<string, Blocking.AnyTask> | Error>()
const taskIds = new Map<number, readonly [module: string, name: string]>()
const unknownTask = ["(unknown)", "(unknown)"] as const

port.on("message", (message: ToWorker) => {
  if (message._tag === "Run") {
    for (const [id, module, name] of message.tasks) taskIds.set(id, [module, name])
    for (const value of message.jobs) queue.push(value)
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
    const seq = queue[head] as number
    const task = taskIds.get(queue[head + 1] as number) ?? unknownTask
    const payload = queue[head + 2]
    const traceId = queue[head + 3] as string | undefined
    const spanId = queue[head + 4] as string | undefined
    const timed = queue[head + 5] === 1
    head += JOB_FIELDS
    // The pool starts a job's run timeout when it hears that the jobs before it are done.
    if (timed) flush()
    Atomics.store(control, 0, seq)
    // Dekker-style handshake with the pool's cancel: one of us sees the other's write.
    if (Atomics.load(control, 1 + (seq % RING)) === seq) {
      Atomics.store(control, 0, 0)
      results.push(seq, REPLY, { _tag: "Cancelled" } satisfies WireReply, 0)
      continue
    }
    const start = performance.now()
    let reply: WireReply
    try {
      const running = runJob(task[0], task[1], seq, payload, traceId, spanId)
      reply = running instanceof Promise ? await running : running
    } catch (thrown) {
      // Only a task module built on another copy of @volley/core, whose invoke is not total, gets here.
      reply = {
        _tag: "Threw",
        name: "Error",
        message: `the task's invoke threw: ${describe(thrown)}`,
        stack: undefined
      }
    }
    Atomics.store(control, 0, 0)
    if (controllers.size > 0) controllers.delete(seq)
    if (aborted.size > 0) aborted.delete(seq)
    const now = performance.now()
    if (reply._tag === "Success") results.push(seq, SUCCESS, reply.value, now - start)
    else results.push(seq, REPLY, reply, now - start)
    if (results.length >= MAX_BATCH * RESULT_FIELDS || now >= flushAt) {
      flush()
      flushAt = now + FLUSH_MS
    }
  }
  queue.length = 0
  head = 0
  flush()
  draining = false
}

const runJob = (
  module: string,
  name: string,
  seq: number,
  payload: unknown,
  traceId: string | undefined,
  spanId: string | undefined
): WireReply | Promise<WireReply> => {
  const tasks = modules.get(module)
  if (tasks === undefined) return load(module).then(() => runJob(module, name, seq, payload, traceId, spanId))
  if (tasks instanceof Error) return { _tag: "NotFound", reason: `cannot import the module: ${tasks.message}` }
  const task = tasks.get(name)
  if (task === undefined) return { _tag: "NotFound", reason: `the module exports no task named "${name}"` }
  return task.invoke(payload, context(seq, traceId, spanId), transfer)
}

const load = async (url: string) => {
  try {
    const namespace: Record<string, unknown> = await import(url)
    const tasks = new Map<string, Blocking.AnyTask>()
    for (const value of Object.values(namespace)) if (isTask(value)) tasks.set(value.name, value)
    modules.set(url, tasks)
  } catch (error) {
    modules.set(url, error instanceof Error ? error : new Error(String(error)))
  }
}

// Most handlers never look at the signal; an AbortController per task would cost more than a no-op task.
// Only a type import of @volley/core: the whole package (HTTP included) would double a thread's
// start-up time. Tasks carry `invoke`; this is `Blocking.isTask` by its (string) type id.
const TASK = "~@volley/core/Blocking/Task"
const isTask = (u: unknown): u is Blocking.AnyTask =>
  typeof u === "object" && u !== null && (u as Record<string, unknown>)[TASK] === TASK

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

const describe = (thrown: unknown): string => {
  try {
    return thrown instanceof Error ? String(thrown.message) : String(thrown)
  } catch {
    return "(cannot be described)"
  }
}

const flush = () => {
  if (results.length === 0) return
  try {
    port.postMessage({ _tag: "Done", results } satisfies FromWorker, transfer as never)
  } catch {
    // Some result cannot be cloned (a function, a symbol): send them one by one to find it.
    for (let i = 0; i < results.length; i += RESULT_FIELDS) {
      const one = results.slice(i, i + RESULT_FIELDS)
      try {
        port.postMessage({ _tag: "Done", results: one } satisfies FromWorker)
      } catch (error) {
        const reason = `cannot be sent back: ${error instanceof Error ? error.message : String(error)}`
        const reply: WireReply = { _tag: "InvalidResult", reason }
        port.postMessage({ _tag: "Done", results: [one[0], REPLY, reply, one[3]] } satisfies FromWorker)
      }
    }
  }
  results = []
  transfer = []
}

port.postMessage({ _tag: "Ready" } satisfies FromWorker)
