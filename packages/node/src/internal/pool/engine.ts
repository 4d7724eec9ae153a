// The pool engine: threads, the queue, dispatch, timeouts, two-phase cancellation, crash
// recovery. Plain callbacks rather than fibers on the hot path: a no-op task must cost a few
// microseconds here, and Effect's RPC worker pool (10–40k tasks/s, no hard cancellation, one
// crash failing calls on healthy workers) is what this replaces.

import { type ResourceLimits, Worker } from "node:worker_threads"
import { Blocking } from "@volley/core"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { Breaker } from "./breaker.ts"
import { type FromWorker, RESULT_FIELDS, RING, SUCCESS, type ToWorker, type WireReply } from "./messages.ts"
import { type Entry, Queue } from "./queue.ts"

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

export type Outcome = { readonly reply: Blocking.Reply } | { readonly error: Blocking.BlockingError }

const QUEUED = 0
const WAITING = 1 // waiting for room in a full queue ("wait" back-pressure)
const SENT = 2
const FINISHED = 3

export interface Job extends Entry {
  readonly request: Blocking.Request
  readonly name: string
  readonly module: string
  readonly taskId: number
  readonly clock: Clock.Clock
  readonly done: (outcome: Outcome) => void
  state: number
  seq: number
  slot: Slot | undefined
  enqueuedAt: number
  cancelled: boolean
  started: boolean
  timer: (() => void) | undefined
  grace: (() => void) | undefined
}

interface Slot {
  readonly thread: Worker
  readonly control: Int32Array
  readonly inFlight: Array<Job>
  /** Task ids this thread has been told about. */
  readonly known: Set<number>
  outbox: Array<Job>
  nextSeq: number
  ready: boolean
  completed: number
  terminating: boolean
  outOfMemory: boolean
  lastError: string | undefined
  idleTimer: (() => void) | undefined
}

export class Engine {
  private readonly options: EngineOptions
  private readonly queue = new Queue<Job>()
  private readonly waiting = new Queue<Job>()
  private readonly slots = new Set<Slot>()
  private starting = 0
  private scheduled = false
  private closing = false
  private drained: (() => void) | undefined
  /** Moving average of run time per task id: short tasks get several in flight per thread, long ones one. */
  private readonly avgRunMillis: Array<number> = []
  private readonly breaker: Breaker
  /** Numeric ids per task object (an identity lookup; the same module#name keeps one id). */
  private readonly taskIds = new WeakMap<Blocking.AnyTask, number>()
  private readonly taskIdsByName = new Map<string, number>()

  constructor(options: EngineOptions) {
    this.options = options
    this.breaker = new Breaker(options.clock)
    for (let i = 0; i < options.minWorkers; i++) this.spawn()
  }

  get threadCount(): number {
    return this.slots.size
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
      const key = `${module}#${name}`
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
      cancelled: false,
      started: false,
      removed: false,
      timer: undefined,
      grace: undefined
    }
    if (this.queue.length >= this.options.maxQueue) {
      if (this.options.queueFull === "fail") {
        done({ error: new Blocking.QueueFullError({ task: name, capacity: this.options.maxQueue }) })
        return undefined
      }
      job.state = WAITING
      this.waiting.push(job)
    } else {
      this.queue.push(job)
    }
    const queueTimeout = request.queueTimeoutMillis ?? this.options.queueTimeoutMillis
    if (queueTimeout !== undefined) {
      // Runs until the task starts: waiting in a thread's prefetch counts as queued too.
      job.timer = after(clock, queueTimeout, () => {
        if (job.started) return
        const sent = job.state === SENT
        if (!sent) this.unqueue(job)
        this.finish(job, {
          error: new Blocking.TaskTimeoutError({ task: name, phase: "queued", timeoutMillis: queueTimeout })
        })
        if (sent) this.stop(job)
      })
    }
    this.schedule()
    return job
  }

  /** Interruption: a queued job leaves the queue; a running one is aborted, then its thread killed. */
  cancel(job: Job): void {
    if (job.state === QUEUED || job.state === WAITING) {
      this.unqueue(job)
      job.state = FINISHED
      clear(job)
      return
    }
    if (job.state !== SENT) return
    job.state = FINISHED
    job.cancelled = true
    clear(job)
    this.stop(job)
  }

  /** Closes the pool: finishes (drain) or fails (cancel) what is queued, then ends every thread. */
  async close(mode: "drain" | "cancel"): Promise<void> {
    this.closing = true
    if (mode === "cancel") {
      for (const job of [...this.waiting.drain(), ...this.queue.drain()]) this.shutDown(job)
      for (const slot of this.slots) for (const job of slot.inFlight) this.shutDown(job)
    } else if (!this.idle()) {
      await new Promise<void>((resolve) => {
        this.drained = resolve
      })
    }
    await Promise.all([...this.slots].map((slot) => this.terminate(slot)))
  }

  private shutDown(job: Job): void {
    if (job.state === FINISHED) return
    this.finish(job, { error: new Blocking.ExecutorShutDownError({ task: job.name }) })
  }

  private refusal(name: string, module: string): Blocking.BlockingError | undefined {
    if (this.closing) return new Blocking.ExecutorShutDownError({ task: name })
    const reason = this.breaker.refusal(module)
    return reason === undefined ? undefined : crashLoop(name, reason)
  }

  private unqueue(job: Job): void {
    if (job.state === QUEUED) this.queue.remove(job)
    else this.waiting.remove(job)
  }

  private finish(job: Job, outcome: Outcome): void {
    job.state = FINISHED
    clear(job)
    job.done(outcome)
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => this.pump())
  }

  private pump(): void {
    this.scheduled = false
    const max = this.options.maxTasksPerWorker
    for (let job = this.queue.peek(); job !== undefined; job = this.queue.peek()) {
      const avg = this.avgRunMillis[job.taskId] ?? 1
      const slot = this.pick(Math.min(max, avg < 0.25 ? max : avg < 2 ? 2 : 1))
      if (slot === undefined) break
      this.send(slot, this.queue.shift()!)
    }
    while (this.waiting.length > 0 && this.queue.length < this.options.maxQueue) {
      const job = this.waiting.shift()!
      job.state = QUEUED
      this.queue.push(job)
    }
    const wanted = Math.min(this.options.maxWorkers - this.slots.size, this.queue.length - this.starting)
    for (let i = 0; i < wanted; i++) this.spawn()
    // Each post may wake a sleeping thread, which on a busy machine costs far more than the
    // message: hold jobs back while the thread still has plenty posted, so they travel in few,
    // large batches (the next batch of results triggers the send).
    for (const slot of this.slots) {
      const posted = slot.inFlight.length - slot.outbox.length
      if (slot.outbox.length > 0 && (posted * 2 <= max || slot.outbox.length * 2 >= max)) this.flush(slot)
    }
    for (const slot of this.slots) if (slot.inFlight.length === 0) this.becameIdle(slot)
    this.options.observe.queueLength(this.queue.length + this.waiting.length)
    let busy = 0
    for (const slot of this.slots) if (slot.inFlight.length > 0) busy++
    this.options.observe.utilization(busy / this.options.maxWorkers)
    if (this.drained !== undefined && this.idle()) this.drained()
  }

  private idle(): boolean {
    if (this.queue.length > 0 || this.waiting.length > 0) return false
    for (const slot of this.slots) if (slot.inFlight.length > 0) return false
    return true
  }

  private pick(window: number): Slot | undefined {
    let best: Slot | undefined
    for (const slot of this.slots) {
      if (!slot.ready || slot.terminating || slot.inFlight.length >= window) continue
      if (best === undefined || slot.inFlight.length < best.inFlight.length) best = slot
    }
    return best
  }

  private send(slot: Slot, job: Job): void {
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
    const waited = performance.now() - job.enqueuedAt
    this.options.observe.queueWait(waited)
    job.request.span.attribute("volley.blocking.queue_wait_ms", waited)
    job.request.span.attribute("volley.blocking.thread_id", slot.thread.threadId)
  }

  private flush(slot: Slot): void {
    const jobs = slot.outbox
    slot.outbox = []
    const transfer: Array<Transferable> = []
    for (const job of jobs) for (const buffer of job.request.transfer) transfer.push(buffer)
    try {
      this.post(slot, jobs, transfer)
    } catch {
      // One payload cannot be cloned: send them one at a time and fail only the culprits.
      for (const job of jobs) {
        try {
          this.post(slot, [job], job.request.transfer)
        } catch (error) {
          slot.inFlight.splice(slot.inFlight.indexOf(job), 1)
          const reason = `cannot be sent to a thread: ${error instanceof Error ? error.message : String(error)}`
          this.finish(job, { error: new Blocking.InvalidPayloadError({ task: job.name, reason }) })
        }
      }
      if (slot.inFlight.length === 0) this.becameIdle(slot)
    }
    // The first job in flight is running now: its run timeout starts.
    const first = slot.inFlight[0]
    if (first !== undefined) this.started(first)
  }

  private post(slot: Slot, jobs: ReadonlyArray<Job>, transfer: ReadonlyArray<Transferable>): void {
    const tasks: Array<readonly [number, string, string]> = []
    // Packed, not `new Array(n)`: holey arrays take the structured-clone slow path.
    const flat: Array<unknown> = []
    for (const job of jobs) {
      if (!slot.known.has(job.taskId) && !tasks.some((t) => t[0] === job.taskId)) {
        tasks.push([job.taskId, job.module, job.name])
      }
      flat.push(job.seq, job.taskId, job.request.payload, job.request.span.traceId, job.request.span.spanId)
    }
    slot.thread.postMessage({ _tag: "Run", tasks, jobs: flat } satisfies ToWorker, transfer as never)
    for (const task of tasks) slot.known.add(task[0])
  }

  private started(job: Job): void {
    if (job.state !== SENT || job.started) return
    job.started = true
    clear(job)
    const timeout = job.request.timeoutMillis ?? this.options.timeoutMillis
    if (timeout === undefined) return
    job.timer = after(job.clock, timeout, () => {
      if (job.state !== SENT) return
      this.finish(job, {
        error: new Blocking.TaskTimeoutError({ task: job.name, phase: "running", timeoutMillis: timeout })
      })
      this.stop(job)
    })
  }

  /** Second phase of cancellation: skip it if not started, else abort, then terminate after the grace period. */
  private stop(job: Job): void {
    const slot = job.slot!
    Atomics.store(slot.control, 1 + (job.seq % RING), job.seq)
    if (Atomics.load(slot.control, 0) !== job.seq && slot.inFlight[0] !== job) return
    slot.thread.postMessage({ _tag: "Abort", seq: job.seq } satisfies ToWorker)
    job.grace = after(job.clock, this.options.gracePeriodMillis, () => {
      if (slot.inFlight.includes(job)) void this.terminate(slot)
    })
  }

  private spawn(): void {
    this.starting++
    const control = new Int32Array(new SharedArrayBuffer(4 * (1 + RING)))
    const thread = new Worker(this.options.workerUrl, {
      workerData: { control: control.buffer },
      ...(this.options.resourceLimits === undefined ? {} : { resourceLimits: this.options.resourceLimits })
    })
    const slot: Slot = {
      thread,
      control,
      inFlight: [],
      known: new Set(),
      outbox: [],
      nextSeq: 1,
      ready: false,
      completed: 0,
      terminating: false,
      outOfMemory: false,
      lastError: undefined,
      idleTimer: undefined
    }
    this.slots.add(slot)
    thread.on("message", (message: FromWorker) => {
      if (message._tag === "Done") this.done(slot, message.results)
      else this.ready(slot)
    })
    thread.on("error", (error: Error & { code?: string }) => {
      slot.outOfMemory ||= error.code === "ERR_WORKER_OUT_OF_MEMORY"
      slot.lastError = error.message
    })
    thread.on("exit", (code) => this.exited(slot, code))
  }

  private ready(slot: Slot): void {
    this.starting--
    slot.ready = true
    this.breaker.threadReady()
    this.becameIdle(slot)
    this.schedule()
  }

  private done(slot: Slot, results: ReadonlyArray<unknown>): void {
    for (let i = 0; i < results.length; i += RESULT_FIELDS) {
      const seq = results[i] as number
      const reply: WireReply =
        results[i + 1] === SUCCESS ? { _tag: "Success", value: results[i + 2] } : (results[i + 2] as WireReply)
      const runMillis = results[i + 3] as number
      // Replies come in the order jobs were sent; the search is for the rare out-of-order case.
      let job = slot.inFlight[0]
      if (job?.seq === seq) slot.inFlight.shift()
      else {
        const index = slot.inFlight.findIndex((job) => job.seq === seq)
        if (index < 0) continue
        job = slot.inFlight.splice(index, 1)[0]
      }
      if (job === undefined) continue
      slot.completed++
      if (reply._tag !== "Cancelled") {
        const avg = this.avgRunMillis[job.taskId] ?? 1
        this.avgRunMillis[job.taskId] = avg + (runMillis - avg) / 8
        this.options.observe.runTime(runMillis)
      }
      job.grace?.()
      if (reply._tag !== "Cancelled" && reply._tag !== "NotFound") this.breaker.moduleWorked(job.module)
      if (job.state !== SENT) continue
      job.request.span.attribute("volley.blocking.run_ms", runMillis)
      this.finish(job, outcomeOf(job, reply))
    }
    const next = slot.inFlight[0]
    if (next !== undefined) this.started(next)
    // Idle is decided in pump, after refilling: no unref/idle-timer churn between two tasks.
    this.schedule()
  }

  private becameIdle(slot: Slot): void {
    if (slot.inFlight.length > 0 || slot.terminating) return
    if (slot.ready && slot.idleTimer === undefined) {
      slot.thread.unref()
      slot.idleTimer = after(this.options.clock, this.options.idleTimeoutMillis, () => {
        slot.idleTimer = undefined
        if (slot.inFlight.length === 0 && this.slots.size > this.options.minWorkers) void this.terminate(slot)
      })
    }
  }

  private terminate(slot: Slot): Promise<unknown> {
    slot.terminating = true
    slot.idleTimer?.()
    slot.idleTimer = undefined
    return slot.thread.terminate()
  }

  private exited(slot: Slot, code: number): void {
    this.slots.delete(slot)
    slot.idleTimer?.()
    if (!slot.ready) this.starting--
    const intended = slot.terminating
    if (!intended) this.options.observe.crash()
    const running = Atomics.load(slot.control, 0)
    let culprit: Job | undefined
    for (const job of slot.inFlight) {
      job.grace?.()
      if (job.state !== SENT) continue
      if (!intended && job.seq === running) {
        culprit = job
        this.finish(job, {
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
        this.queue.pushFront(job)
      }
    }
    if (!intended) this.countDeath(slot, culprit)
    if (this.slots.size < this.options.minWorkers && !this.closing) this.spawn()
    this.schedule()
  }

  private countDeath(slot: Slot, culprit: Job | undefined): void {
    if (!slot.ready) {
      const opened = this.breaker.startupDeath()
      if (opened !== undefined) this.failQueued(() => true, opened)
    } else if (culprit !== undefined) {
      const opened = this.breaker.moduleDeath(culprit.module)
      if (opened !== undefined) this.failQueued((job) => job.module === culprit.module, opened)
    }
  }

  private failQueued(which: (job: Job) => boolean, detail: string): void {
    for (const queue of [this.queue, this.waiting]) {
      const kept: Array<Job> = []
      for (const job of queue.drain()) {
        if (which(job)) this.finish(job, { error: crashLoop(job.name, detail) })
        else kept.push(job)
      }
      for (const job of kept) queue.push(job)
    }
  }
}

const outcomeOf = (job: Job, reply: WireReply): Outcome => {
  switch (reply._tag) {
    case "NotFound":
      return { error: new Blocking.TaskNotFoundError({ task: job.name, module: job.module, reason: reply.reason }) }
    case "Cancelled":
      return { error: new Blocking.ExecutorShutDownError({ task: job.name }) }
    default:
      return { reply }
  }
}

const crashLoop = (task: string, detail: string) =>
  new Blocking.WorkerDiedError({ task, reason: "crash-loop", exitCode: undefined, detail })

const clear = (job: Job): void => {
  job.timer?.()
  job.timer = undefined
}

/** Calls `f` after `millis` on `clock` (a TestClock in tests); returns a canceller. */
const after = (clock: Clock.Clock, millis: number, f: () => void): (() => void) => {
  const fiber = Effect.runFork(clock.sleep(Duration.millis(millis)))
  fiber.addObserver((exit) => {
    if (exit._tag === "Success") f()
  })
  return () => fiber.interruptUnsafe()
}
