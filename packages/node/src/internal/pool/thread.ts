// One pool thread, as the engine tracks it. A record only: the engine is the one module that
// writes it (and listens to its Worker).
import { MessageChannel, type MessagePort, type ResourceLimits, Worker } from "node:worker_threads"
import { CONTROL_SLOTS, type WorkerData } from "./protocol.ts"

/**
 * - `starting`: spawned, importing its preloads; takes no job yet
 * - `ready`: takes jobs
 * - `terminating`: being ended on purpose (idle, grace period over, shutdown); its exit is no crash
 */
export type ThreadState = "starting" | "ready" | "terminating"

/** `J` is the engine's job record (job.ts), left open so that this module and job.ts do not import each other. */
export interface Thread<J> {
  readonly worker: Worker
  /** The pool's end of its own channel with the thread (unref'd: the Worker's ref decides the process's life). */
  readonly port: MessagePort
  readonly control: Int32Array
  state: ThreadState
  /**
   * Set when the pool terminates it (`terminating`): when, on the pool's clock, and its exit. A
   * thread blocked in a native call exits only once the call returns (see the engine's `terminate`).
   */
  terminated: { readonly at: number; readonly exit: Promise<unknown> } | undefined
  /** Jobs sent to it, in the order it runs them; the first one is running. */
  readonly inFlight: Array<J>
  /** Jobs assigned to it and not yet posted: they travel in one message per dispatch round. */
  outbox: Array<J>
  /** Task ids this thread has been told about. */
  readonly known: Set<number>
  nextSeq: number
  /** Set by an `error` event before its exit: tells an out-of-memory death from a plain exit, and why it died. */
  outOfMemory: boolean
  lastError: string | undefined
  /** The module whose import expired on it (see `importTimeout`): it takes no more jobs, and is ending. */
  expired: string | undefined
  /** Cancels its idle timer (it ends the thread if the pool can spare it). */
  idleTimer: (() => void) | undefined
  /**
   * Cancels the pool's own bound on the import under way (its preloads while it starts, then a
   * job's module, see `Importing`): the next message from the thread says it is not blocked.
   */
  importWatch: (() => void) | undefined
  /** Started with modules to preload that the pool learnt (see the engine's `preload`), not only declared ones. */
  learned: boolean
  /** Results received from it (or known lost), matched against what it says it posted (`Synced`). */
  received: number
  /** Why a message from it could not be read (its results in it are lost; see `Sync`). */
  unreadable: string | undefined
  /** Run messages posted to it (see `Unreadable`). */
  runs: number
}

/**
 * Starts a thread that imports `preload` before it reports ready. Throws what `new Worker` throws
 * when the thread cannot be created (see `describeSpawnError`).
 */
export const spawnThread = (
  workerUrl: URL,
  resourceLimits: ResourceLimits | undefined,
  preload: ReadonlyArray<string>,
  importTimeoutMillis: number
): Thread<never> => {
  const control = new Int32Array(new SharedArrayBuffer(4 * CONTROL_SLOTS))
  const { port1, port2 } = new MessageChannel()
  const workerData: WorkerData = {
    port: port2,
    control: control.buffer as SharedArrayBuffer,
    preload,
    importTimeoutMillis
  }
  let worker: Worker
  try {
    worker = new Worker(bootstrap(workerUrl), {
      eval: true,
      workerData,
      transferList: [port2],
      ...(resourceLimits === undefined ? {} : { resourceLimits })
    })
  } catch (error) {
    port1.close()
    throw error
  }
  port1.unref()
  return {
    worker,
    port: port1,
    control,
    state: "starting",
    terminated: undefined,
    inFlight: [],
    outbox: [],
    known: new Set(),
    nextSeq: 1,
    outOfMemory: false,
    lastError: undefined,
    expired: undefined,
    idleTimer: undefined,
    importWatch: undefined,
    learned: false,
    received: 0,
    unreadable: undefined,
    runs: 0
  }
}

/**
 * The thread's first lines: turn on Node's module compile cache, then load the worker entry. Most
 * of a thread's start-up is compiling the task modules and what they import (`effect/Schema` alone
 * is ~150 modules; on a `.ts` entry, type stripping too): with the cache, threads after the first
 * (in this process, or in later runs) reuse the compiled code. It must be on before the entry loads,
 * hence a script rather than the entry itself. A no-op when the cache is already on (the process's
 * `NODE_COMPILE_CACHE`) or off (`NODE_DISABLE_COMPILE_CACHE`).
 */
const bootstrap = (workerUrl: URL): string =>
  // In a block: a top-level `const` of a script would be a global that every module sees.
  `{ const { enableCompileCache } = require("node:module");\n` +
  `for (const name of ${JSON.stringify(cjsGlobals)}) delete globalThis[name];\n` +
  `enableCompileCache();\nimport(${JSON.stringify(workerUrl.href)}); }`

/**
 * Node runs an eval'd script with these set on globalThis (`__filename` is "[worker eval]") and
 * leaves them there, where no ES module on the main thread has them: every task module would see
 * them, and code that checks for them takes its CommonJS path (`@effect/platform-node`'s http
 * module threw at import, `createRequire("[worker eval]")`, so no task module that reached it
 * could run on a thread). The bootstrap removes them once it has `require`d what it needs.
 */
const cjsGlobals = ["require", "module", "exports", "__filename", "__dirname"]

/** What a thread's uncaught throw says about itself; never throws (the value is whatever the thread threw). */
export const describeThrown = (error: unknown): string => {
  try {
    if (typeof error === "object" && error !== null) {
      const message = (error as { message?: unknown }).message
      if (typeof message === "string") return message
    }
    return `uncaught ${typeof error === "symbol" ? error.toString() : String(error)}`
  } catch {
    return "uncaught value that cannot be described"
  }
}

/**
 * Why `new Worker` threw: the OS refused a thread (ERR_WORKER_INIT_FAILED, "EAGAIN" at a
 * container's pids limit or when out of memory, or a stack it cannot map). The code is kept: the
 * message alone is often just "EAGAIN".
 */
export const describeSpawnError = (error: unknown): string => {
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined
  const message = describeThrown(error)
  return `the thread could not be created (${typeof code === "string" ? `${code}: ${message}` : message})`
}

/** True for the error a thread emits when it exceeds its heap limit. */
export const isOutOfMemory = (error: unknown): boolean =>
  typeof error === "object" && error !== null && (error as { code?: unknown }).code === "ERR_WORKER_OUT_OF_MEMORY"
