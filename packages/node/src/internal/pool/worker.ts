// Entry point of every pool thread. Imports the task modules it was asked to preload, reports
// Ready, then runs the jobs it receives strictly one at a time, in order, so the pool always
// knows which job is running (control[0]) and whom to blame if the thread dies. A job's module is
// imported before the job counts as started: the import is queue time, not run time. Results go
// back in batches: at most every FLUSH_MS, every MAX_BATCH results, when the local queue runs dry,
// before a module's import, with the Started message of a job with a timeout (run or queue) and
// after it. It loads protocol.ts and the task modules, nothing else: every module loaded here is
// paid for by every thread's start-up.

import { workerData } from "node:worker_threads"
import type * as Blocking from "@volley/core/Blocking"
import {
  decodeJob,
  encodeResult,
  type FromWorker,
  JOB_FIELDS,
  MAX_TIMER_MILLIS,
  READY,
  REPLY,
  RESULT_FIELDS,
  RING,
  TASK_TYPE_ID,
  type ToWorker,
  type WireReply,
  type WorkerData
} from "./protocol.ts"

const FLUSH_MS = 1
const MAX_BATCH = 64

const data = workerData as WorkerData
// The pool's own channel, not parentPort: whatever a task posts on parentPort never reaches the pool.
const port = data.port
const control = new Int32Array(data.control)
const queue: Array<unknown> = []
let head = 0
let draining = false
let results: Array<unknown> = []
let transfer: Array<Transferable> = []
// Where each held result's transferables end in `transfer` (they start where the previous one's end).
let transferEnds: Array<number> = []
/** Results posted so far (see `Sync`). */
let posted = 0
/** Run messages received so far, read or not (see `Unreadable`). */
let runs = 0
/** A Run could not be read: the task ids it announced may come again (see `announced`). */
let lostRun = false
/** Wakes a job waiting for its task's announcement (see `announced`). */
let onAnnounce: (() => void) | undefined
const controllers = new Map<number, AbortController>()
const aborted = new Set<number>()
/** A module's tasks by name; a string is why a name cannot be run (two different tasks share it). */
type Tasks = Map<string, Blocking.AnyTask | string>
/** A module's tasks, why it could not be imported, or its import under way. */
const modules = new Map<string, Tasks | Error | Promise<void>>()
const taskIds = new Map<number, readonly [module: string, name: string]>()
const unknownTask = ["(unknown)", "(unknown)"] as const

port.on("message", (message: ToWorker) => {
  if (message._tag === "Run") {
    runs++
    for (const [id, module, name] of message.tasks) taskIds.set(id, [module, name])
    if (onAnnounce !== undefined && message.tasks.length > 0) onAnnounce()
    for (const value of message.jobs) queue.push(value)
    if (!draining) void drain()
  } else if (message._tag === "Sync") {
    // After every result posted so far: the pool counts those it received against `posted`.
    post({ _tag: "Synced", posted })
  } else if (message.seq === Atomics.load(control, 0)) {
    const controller = controllers.get(message.seq)
    if (controller === undefined) aborted.add(message.seq)
    else controller.abort()
  }
})

// A Run this thread cannot read (a payload nested deeper than its stack deserializes): Node drops it,
// jobs and all. The pool fails those jobs, which it finds by the Run's number.
port.on("messageerror", (error: unknown) => {
  runs++
  lostRun = true
  post({ _tag: "Unreadable", run: runs, reason: describe(error) })
})

const drain = async () => {
  draining = true
  let now = performance.now()
  let flushAt = now + FLUSH_MS
  while (head < queue.length) {
    const [seq, taskId, payload, traceId, spanId, timed] = decodeJob(queue, head)
    const [module, name] = taskIds.get(taskId) ?? (lostRun ? await announced(taskId) : unknownTask)
    head += JOB_FIELDS
    let tasks = modules.get(module)
    let imported = false
    if (tasks === undefined || tasks instanceof Promise) {
      // -seq: the pool blames this job if the import kills the thread, but neither aborts it nor
      // ends the thread for its sake (a cancel is seen below, once the import is done), unless the
      // import blocks the thread past its timeout (see `Importing`).
      Atomics.store(control, 0, -seq)
      if (Atomics.load(control, 1 + (seq % RING)) !== seq) {
        // Held results do not wait for the import.
        flush()
        post({ _tag: "Importing", seq })
        await (tasks ?? load(module))
        tasks = modules.get(module) as Tasks | Error
        imported = tasks instanceof Map
      }
      now = performance.now()
      flushAt = now + FLUSH_MS
    }
    Atomics.store(control, 0, seq)
    // Dekker-style handshake with the pool's cancel: one of us sees the other's write.
    if (Atomics.load(control, 1 + (seq % RING)) === seq) {
      Atomics.store(control, 0, 0)
      encodeResult(results, seq, { _tag: "Cancelled" }, 0)
      transferEnds.push(transfer.length)
      continue
    }
    // The pool starts a job's run timeout (and ends its queue timeout) when it hears it started;
    // it preloads a module in new threads once one has imported it.
    if ((timed === 1 && tasks instanceof Map) || imported) flush(seq)
    const start = performance.now()
    let reply: WireReply
    try {
      const running = runJob(tasks as Tasks | Error, name, seq, payload, traceId, spanId)
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
    now = performance.now()
    encodeResult(results, seq, reply, now - start)
    transferEnds.push(transfer.length)
    // A job with a deadline is reported at once: held back behind a long job, its run timeout
    // would fire (and stop this thread) although it had ended.
    if (timed === 1 || results.length >= MAX_BATCH * RESULT_FIELDS || now >= flushAt) {
      flush()
      flushAt = now + FLUSH_MS
    }
  }
  queue.length = 0
  head = 0
  flush()
  draining = false
}

/**
 * A job sent after a Run this thread could not read, whose task that Run announced (the pool
 * announces a task once per thread): the pool announces every task again when it hears of the lost
 * Run (see `Unreadable`), so the job waits for it, held results sent first. In order: results go
 * back in the order jobs were sent.
 */
const announced = async (taskId: number): Promise<readonly [module: string, name: string]> => {
  flush()
  for (;;) {
    const known = taskIds.get(taskId)
    if (known !== undefined) return known
    await new Promise<void>((resolve) => {
      onAnnounce = resolve
    })
    onAnnounce = undefined
  }
}

const runJob = (
  tasks: Tasks | Error,
  name: string,
  seq: number,
  payload: unknown,
  traceId: string | undefined,
  spanId: string | undefined
): WireReply | Promise<WireReply> => {
  if (tasks instanceof Error) {
    return { _tag: "NotFound", reason: `cannot import the module: ${tasks.message}${syntaxErrorAt(tasks)}` }
  }
  const task = tasks.get(name)
  if (task === undefined) return { _tag: "NotFound", reason: `the module exports no task named "${name}"` }
  if (typeof task === "string") return { _tag: "NotFound", reason: task }
  return task.invoke(payload, context(seq, traceId, spanId), transfer)
}

// Where a syntax error is, when the loader says: Node's type stripping puts `file:line` (of the
// module, or of a module it imports, which its message would not name) on the first line of the
// stack; V8's own parser (a `.js` module) says nothing of it.
const syntaxErrorAt = (error: Error): string => {
  if (!(error instanceof SyntaxError)) return ""
  const first = String(error.stack).split("\n", 1)[0]!
  return /^\S+:\d+$/.test(first) ? ` (at ${first})` : ""
}

/**
 * Imports a module once; its tasks are found by their type id. An import still pending after
 * `importTimeoutMillis` ends the thread (see `expire`).
 */
const load = (url: string): Promise<void> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  // Never rejects: a module that cannot be imported is an Error in `modules`, its tasks' answer.
  const imported = import(url)
    .then((namespace: Record<string, unknown>) => {
      clearTimeout(timer)
      modules.set(url, tasksOf(namespace))
    })
    .catch((error: unknown) => {
      clearTimeout(timer)
      modules.set(url, error instanceof Error ? error : new Error(describe(error)))
    })
  modules.set(url, imported)
  const millis = data.importTimeoutMillis
  if (millis <= MAX_TIMER_MILLIS) timer = setTimeout(expire, millis, url, millis)
  return imported
}

// An import that never settles would hold this thread's jobs (and its Ready) for good, and one
// that settles late could still end the thread under another module's task. The pool ends the
// thread (a throw could be caught by a module's own uncaughtException handler): it fails the job
// waiting for the import (the others go to other threads) and counts the death against the
// module, as for a module that kills its thread (a preloaded one's against start-up), so its
// crash-loop breaker ends the retries. Until then the thread runs nothing more: not the import's
// end, not another job, which the pool would blame for the death.
const expire = (url: string, millis: number): void => {
  post({
    _tag: "Expired",
    module: url,
    reason: `the import of ${url} did not settle within ${millis} ms (importTimeout)`
  })
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
}

// A module's exports by task name. Reading an export may throw (a Proxy that refuses unknown
// keys, as envalid's `cleanEnv` returns): that is then a failure of the import, not of the thread.
const tasksOf = (namespace: Record<string, unknown>): Tasks => {
  const tasks: Tasks = new Map()
  for (const value of Object.values(namespace)) {
    if (!isTask(value)) continue
    const known = tasks.get(value.name)
    // One task exported twice (`export default t` besides `export const t`) is still one task.
    // Two different tasks under one name run neither: either handler could answer for the other.
    // The reason need not repeat the URL: TaskNotFoundError's message names the module.
    if (known === undefined) tasks.set(value.name, value)
    else if (known !== value)
      tasks.set(value.name, `the module exports two tasks named "${value.name}": give each its own name`)
  }
  return tasks
}

// Any other export is not a task, whatever reading it does.
const isTask = (u: unknown): u is Blocking.AnyTask => {
  try {
    return typeof u === "object" && u !== null && (u as Record<string, unknown>)[TASK_TYPE_ID] === TASK_TYPE_ID
  } catch {
    return false
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

const describe = (thrown: unknown): string => {
  try {
    return thrown instanceof Error ? String(thrown.message) : String(thrown)
  } catch {
    return "(cannot be described)"
  }
}

const post = (message: FromWorker, moved?: ReadonlyArray<Transferable>) => port.postMessage(message, moved as never)

/** Sends the results held back; with `started`, as the Started message of that job (sent even without results). */
const flush = (started?: number) => {
  if (results.length === 0) {
    if (started !== undefined) post({ _tag: "Started", seq: started, results })
    return
  }
  try {
    post(started === undefined ? { _tag: "Done", results } : { _tag: "Started", seq: started, results }, transfer)
    posted += results.length / RESULT_FIELDS
  } catch {
    if (started !== undefined) post({ _tag: "Started", seq: started, results: [] })
    // Some result cannot be sent (a function, a symbol, a transfer list that is not): send them
    // one by one, each with its own transferables, to find it, as the inline executor clones each.
    for (let i = 0, n = 0; i < results.length; i += RESULT_FIELDS, n++) {
      const one = results.slice(i, i + RESULT_FIELDS)
      try {
        post({ _tag: "Done", results: one }, transfer.slice(n === 0 ? 0 : transferEnds[n - 1], transferEnds[n]))
      } catch (error) {
        const reply: WireReply = { _tag: "InvalidResult", reason: `cannot be sent back: ${describe(error)}` }
        post({ _tag: "Done", results: [one[0], REPLY, reply, one[3]] })
      }
      posted++
    }
  }
  results = []
  transfer = []
  transferEnds = []
}

// Ready once the preloads are in, so the first jobs run at once. The pool preloads the modules
// declared on the layer and those a thread has imported: a module that kills every thread on
// import is preloaded only if declared, and then its deaths open the start-up breaker.
void Promise.all(data.preload.map(load)).then(() => {
  // Also in shared memory: the pool may look before it has read the message (see its boot watch).
  Atomics.store(control, READY, 1)
  post({ _tag: "Ready" })
})
