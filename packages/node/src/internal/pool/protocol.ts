// The wire protocol between the pool and its threads: message types, the flat layout of jobs and
// results, and the one pair of encode/decode functions for each. Both sides import this module,
// so it imports nothing at run time: a thread must not pay for loading `effect` to speak it.
//
// Jobs and results travel flat, several per message: structured clone pays per object, so one
// array of N * FIELDS values is much cheaper than N objects. The layouts are the tuple types
// below; `satisfies` ties each FIELDS constant to its tuple's length, and the encoders take the
// tuple's elements, so a field added to one side and not the other does not compile.
import type { MessagePort } from "node:worker_threads"
import type * as Blocking from "@volley/core/Blocking"

/**
 * Slots in a thread's shared control buffer: [0] = seq of the running job (0: none; -seq while the
 * thread imports that job's module, which is not running it yet), [1 + seq % RING] = cancelled seq,
 * [READY] = 1 once the thread has imported its preloads (as it posts Ready).
 */
export const RING = 1024
export const READY = 1 + RING
export const CONTROL_SLOTS = 2 + RING

/** Node fires a timer set past this at once: neither the thread's import timer nor the pool's is set longer. */
export const MAX_TIMER_MILLIS = 2 ** 31 - 1

/**
 * One job: its sequence number on the thread, the task id (announced once per thread in `Run.tasks`),
 * the Schema-encoded payload, the caller's trace, and whether it has a run or queue timeout (`timed`:
 * the thread then reports when the job starts, its module imported (`Started`, so the pool can start
 * or stop its clocks), and the job's own result as soon as it ends).
 */
export type JobFields = readonly [
  seq: number,
  taskId: number,
  payload: unknown,
  traceId: string | undefined,
  spanId: string | undefined,
  timed: 0 | 1
]
export const JOB_FIELDS = 6 satisfies JobFields["length"]

/** A task id announced to a thread: [id, module URL, task name]. */
export type TaskRef = readonly [id: number, module: string, name: string]

/** Replies only the pool's side of the protocol produces, besides the handler's own `Blocking.Reply`. */
export type PoolReply = { readonly _tag: "Cancelled" } | { readonly _tag: "NotFound"; readonly reason: string }
export type WireReply = Blocking.Reply | PoolReply

/**
 * One result: the job's seq, its kind, and how long the handler ran (ms, measured in the thread).
 * Kind SUCCESS carries the encoded success value alone (the common case: no reply object to clone),
 * kind REPLY any other reply object.
 */
export type ResultFields = readonly [
  seq: number,
  kind: typeof SUCCESS | typeof REPLY,
  value: unknown,
  runMillis: number
]
export const RESULT_FIELDS = 4 satisfies ResultFields["length"]
export const SUCCESS = 0
export const REPLY = 1

/** Pool → thread. */
export type ToWorker =
  | { readonly _tag: "Run"; readonly tasks: ReadonlyArray<TaskRef>; readonly jobs: ReadonlyArray<unknown> }
  | { readonly _tag: "Abort"; readonly seq: number }
  /** A message from the thread could not be read (see `Synced`). */
  | { readonly _tag: "Sync" }

/**
 * Thread → pool. `Ready` comes once, after the thread has imported the modules it was asked to preload.
 * `Started` says job `seq` starts running now, and carries the results held back until then: sent for
 * a timed job, and for the first job of a module the thread has just imported (so that new threads
 * preload it); never for an untimed job of a module already imported. `Importing`: job `seq` waits
 * for its module's import, which starts now (the pool ends the thread if it does not hear from it
 * again in time: an import that blocks the thread also blocks the thread's own timer). `Expired`: an
 * import has not settled within `importTimeoutMillis`, and the thread must end, with `reason`; it
 * runs nothing more. `Synced` answers `Sync`: `posted` results have been sent so far, so those the pool
 * has not received were in a message it could not read (a value nested deeper than the pool's
 * thread can deserialize: the pool thread's stack is smaller than a worker's). `Unreadable`: the
 * thread could not read the `run`th Run message sent to it (a payload nested deeper than its stack,
 * limited by `resourceLimits`, deserializes): its jobs never reach the thread, and the pool
 * announces every task again (in a Run without jobs), which jobs sent after the lost Run wait for.
 */
export type FromWorker =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Importing"; readonly seq: number }
  | { readonly _tag: "Expired"; readonly module: string; readonly reason: string }
  | { readonly _tag: "Done"; readonly results: ReadonlyArray<unknown> }
  | { readonly _tag: "Started"; readonly seq: number; readonly results: ReadonlyArray<unknown> }
  | { readonly _tag: "Synced"; readonly posted: number }
  | { readonly _tag: "Unreadable"; readonly run: number; readonly reason: string }

export interface WorkerData {
  /**
   * The thread's end of the pool's own channel. Not `parentPort`: a task can post anything there,
   * and nothing it posts must reach the engine.
   */
  readonly port: MessagePort
  readonly control: SharedArrayBuffer
  /** Task modules to import before the thread reports Ready. */
  readonly preload: ReadonlyArray<string>
  /** How long an import may take before the module's tasks fail on this thread (see `NodeBlocking.Options.importTimeout`). */
  readonly importTimeoutMillis: number
}

/** Appends one job to a flat batch. */
export const encodeJob = (into: Array<unknown>, ...job: JobFields): void => {
  into.push(job[0], job[1], job[2], job[3], job[4], job[5])
}

/** Reads the job at `at` of a flat batch. */
export const decodeJob = (flat: ReadonlyArray<unknown>, at: number): JobFields => [
  flat[at] as number,
  flat[at + 1] as number,
  flat[at + 2],
  flat[at + 3] as string | undefined,
  flat[at + 4] as string | undefined,
  flat[at + 5] as 0 | 1
]

/** Appends one result to a flat batch: a success travels as its bare value. */
export const encodeResult = (into: Array<unknown>, seq: number, reply: WireReply, runMillis: number): void => {
  if (reply._tag === "Success") into.push(seq, SUCCESS, reply.value, runMillis)
  else into.push(seq, REPLY, reply, runMillis)
}

/** Reads the result at `at` of a flat batch. */
export const decodeResult = (
  flat: ReadonlyArray<unknown>,
  at: number
): { readonly seq: number; readonly reply: WireReply; readonly runMillis: number } => ({
  seq: flat[at] as number,
  reply: flat[at + 1] === SUCCESS ? { _tag: "Success", value: flat[at + 2] } : (flat[at + 2] as WireReply),
  runMillis: flat[at + 3] as number
})

/** Only well-formed pool messages count (the channel is the pool's own; this guards against bugs, not tasks). */
export const isFromWorker = (u: unknown): u is FromWorker => {
  if (typeof u !== "object" || u === null) return false
  const tag = (u as { _tag?: unknown })._tag
  if (tag === "Ready") return true
  if (tag === "Expired") {
    return (
      typeof (u as { reason?: unknown }).reason === "string" && typeof (u as { module?: unknown }).module === "string"
    )
  }
  if (tag === "Importing") return typeof (u as { seq?: unknown }).seq === "number"
  if (tag === "Synced") return typeof (u as { posted?: unknown }).posted === "number"
  if (tag === "Unreadable") {
    return typeof (u as { run?: unknown }).run === "number" && typeof (u as { reason?: unknown }).reason === "string"
  }
  if (tag === "Started") {
    if (typeof (u as { seq?: unknown }).seq !== "number") return false
  } else if (tag !== "Done") return false
  const results = (u as { results?: unknown }).results
  return Array.isArray(results) && results.length % RESULT_FIELDS === 0
}

/** `Blocking.TypeId`, checked against it by the compiler: a thread recognises tasks without loading Blocking. */
export const TASK_TYPE_ID: typeof Blocking.TypeId = "~@volley/core/Blocking/Task"
