// The pool engine: its state, and the entry points (submit, cancel, close, and the events of
// its threads) that drive the modules next to it: dispatch.ts (queue → threads), replies.ts
// (threads → callers), cancellation.ts (timeouts, two-phase cancellation), recovery.ts (thread
// deaths), thread.ts (thread lifecycle). Plain callbacks rather than fibers on the hot path: a
// no-op task must cost a few microseconds here, and Effect's RPC worker pool (10–40k tasks/s,
// no hard cancellation, one crash failing calls on healthy workers) is what this replaces.

import type { ResourceLimits } from "node:worker_threads"
import * as Blocking from "@volley/core/Blocking"
import type * as Clock from "effect/Clock"
import { Breaker } from "./breaker.ts"
import { cancel, queueDeadline } from "./cancellation.ts"
import { dispatch, idle, pump } from "./dispatch.ts"
import { FINISHED, finish, type Job, type Outcome, QUEUED, WAITING } from "./job.ts"
import { entryModuleRefusal } from "./mainModule.ts"
import type { FromWorker } from "./messages.ts"
import { Queue } from "./queue.ts"
import { crashLoop, exited } from "./recovery.ts"
import { done } from "./replies.ts"
import { ready, type Slot, start, terminate } from "./thread.ts"

export interface EngineOptions {
  readonly workerUrl: URL
  readonly minWorkers: number
  readonly maxWorkers: number
  readonly idleTimeoutMillis: number
  readonly maxQueue: number
  readonly queueFull: "wait" | "fail"
  readonly timeoutMillis: number | undefined
  readonly queueTimeoutMillis: number | undefined
  readonly gracePeriodMillis: number
  readonly maxTasksPerWorker: number
  readonly resourceLimits: ResourceLimits | undefined
  /** Crash-loop breaker: deaths in a row that open it, and for how long. */
  readonly crashLoopDeaths: number
  readonly crashLoopCooldownMillis: number
  /** Clock for the pool's own timers (idle shrink, crash-loop cool-down). */
  readonly clock: Clock.Clock
  readonly observe: Observer
}

export interface Observer {
  readonly queueLength: (n: number) => void
  readonly queueWait: (millis: number) => void
  readonly runTime: (millis: number) => void
  readonly utilization: (busyShare: number) => void
  readonly crash: () => void
}

export class Engine {
  readonly options: EngineOptions
  readonly queue = new Queue<Job>()
  /** Jobs waiting for room in a full queue ("wait" back-pressure). */
  readonly waiting = new Queue<Job>()
  readonly slots = new Set<Slot>()
  /** Threads spawned and not yet ready. */
  starting = 0
  closing = false
  /** Set while a "drain" close waits for the pool to go idle. */
  drained: (() => void) | undefined
  /** Moving average of run time per task id: short tasks get several in flight per thread, long ones one. */
  readonly avgRunMillis: Array<number> = []
  readonly breaker: Breaker
  private scheduled = false
  /** Numeric ids per task object (an identity lookup; the same module#name keeps one id). */
  private readonly taskIds = new WeakMap<Blocking.AnyTask, number>()
  private readonly taskIdsByName = new Map<string, number>()

  constructor(options: EngineOptions) {
    this.options = options
    this.breaker = new Breaker(options.clock, options.crashLoopDeaths, options.crashLoopCooldownMillis)
    for (let i = 0; i < options.minWorkers; i++) this.spawn()
  }

  submit(request: Blocking.Request, clock: Clock.Clock, done: (outcome: Outcome) => void): Job | undefined {
    const name = request.task.name
    const module = request.task.module
    if (module === undefined) {
      done({
        error: new Blocking.TaskNotFoundError({
          task: name,
          module: "(none)",
          reason: "the task has no module URL; pass `module: import.meta.url` to Blocking.task"
        })
      })
      return undefined
    }
    const refused = this.refusal(name, module)
    if (refused !== undefined) {
      done({ error: refused })
      return undefined
    }
    let taskId = this.taskIds.get(request.task)
    if (taskId === undefined) {
      // Unambiguous: module URLs and task names may both contain "#".
      const key = JSON.stringify([module, name])
      taskId = this.taskIdsByName.get(key) ?? this.taskIdsByName.size + 1
      this.taskIdsByName.set(key, taskId)
      this.taskIds.set(request.task, taskId)
    }
    const job: Job = {
      request,
      name,
      module,
      taskId,
      clock,
      done,
      state: QUEUED,
      seq: 0,
      slot: undefined,
      enqueuedAt: performance.now(),
      started: false,
      removed: false,
      timer: undefined,
      grace: undefined
    }
    // Callers already waiting for room go first, even if a cancel has just made some.
    if ((this.waiting.length === 0 && this.queue.length < this.options.maxQueue) || this.makeRoom()) {
      this.queue.push(job)
    } else if (this.options.queueFull === "fail") {
      done({ error: new Blocking.QueueFullError({ task: name, capacity: this.options.maxQueue }) })
      return undefined
    } else {
      job.state = WAITING
      this.waiting.push(job)
    }
    const queueTimeout = request.queueTimeoutMillis ?? this.options.queueTimeoutMillis
    if (queueTimeout !== undefined) queueDeadline(this, job, queueTimeout)
    this.schedule()
    return job
  }

  /** The caller was interrupted: see cancellation.ts. */
  cancel(job: Job): void {
    cancel(this, job)
  }

  /** Closes the pool: finishes (drain) or fails (cancel) what is queued, then ends every thread. */
  async close(mode: "drain" | "cancel"): Promise<void> {
    this.closing = true
    if (mode === "cancel") {
      for (const job of [...this.waiting.drain(), ...this.queue.drain()]) this.shutDown(job)
      for (const slot of this.slots) for (const job of slot.inFlight) this.shutDown(job)
    } else if (!idle(this)) {
      await new Promise<void>((resolve) => {
        this.drained = resolve
      })
    }
    await Promise.all([...this.slots].map(terminate))
  }

  /** Runs dispatch once, soon: many submits and replies in one tick share one pump. */
  schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      pump(this)
    })
  }

  spawn(): void {
    this.starting++
    const slot = start(this.options)
    this.slots.add(slot)
    // A task can post anything on its thread's parentPort too: only the pool's own messages count.
    slot.thread.on("message", (message: unknown) => {
      if (isDone(message)) done(this, slot, message.results)
      else if (isReady(message) && !slot.ready) ready(this, slot)
    })
    slot.thread.on("exit", (code) => exited(this, slot, code))
  }

  /**
   * The queue looks full, but jobs submitted in this tick are only dispatched by the next pump:
   * let threads with room take them now, so a task is refused (or held back) only when no thread
   * can take it. Callers already waiting move up first, ahead of this one.
   */
  private makeRoom(): boolean {
    dispatch(this)
    return this.queue.length < this.options.maxQueue
  }

  private shutDown(job: Job): void {
    if (job.state === FINISHED) return
    finish(job, { error: new Blocking.ExecutorShutDownError({ task: job.name }) })
  }

  private refusal(name: string, module: string): Blocking.BlockingError | undefined {
    if (this.closing) return new Blocking.ExecutorShutDownError({ task: name })
    const entry = entryModuleRefusal(module)
    if (entry !== undefined) return new Blocking.TaskNotFoundError({ task: name, module, reason: entry })
    const reason = this.breaker.refusal(module)
    return reason === undefined ? undefined : crashLoop(name, reason)
  }
}

const isDone = (u: unknown): u is Extract<FromWorker, { _tag: "Done" }> =>
  typeof u === "object" &&
  u !== null &&
  (u as { _tag?: unknown })._tag === "Done" &&
  Array.isArray((u as { results?: unknown }).results)

const isReady = (u: unknown): boolean =>
  typeof u === "object" && u !== null && (u as { _tag?: unknown })._tag === "Ready"
