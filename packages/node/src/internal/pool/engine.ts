// The pool engine: the one owner of the pool's state. Every transition of a job (job.ts) or a
// thread (thread.ts) is written here, driven by four kinds of events: a caller submits or is
// interrupted, a thread reports (Ready, a batch of results) or exits, a timer fires (queue and
// run timeouts, grace periods, idle threads), and the layer closes. The modules next to it are
// leaves: records (job.ts, thread.ts), a FIFO (queue.ts), the crash-loop breaker (breaker.ts),
// the wire format (protocol.ts) and the code that runs in a thread (worker.ts).
//
// Plain callbacks rather than fibers on the hot path: a no-op task must cost a few microseconds
// here, and Effect's RPC worker pool (10–40k tasks/s, no hard cancellation, one crash failing
// calls on healthy workers) is what this replaces.
//
// - Dispatch: each thread gets a window of jobs sent ahead (many for short tasks, one for long
//   ones and for tasks not measured yet) and runs them one at a time; jobs travel in batches, one
//   message per thread per round.
// - Cancellation is two-phase: a job that has not started is skipped (dropped from the queue, or
//   marked in the thread's control buffer so the thread skips it); a running one has its
//   AbortSignal aborted, and if it still runs after the grace period its thread is terminated.
//   A terminated thread blocked in a native call exits only when the call returns: it makes room
//   for another (see `counted`), and a close waits for it a grace period at most (see `ended`).
//   So does one the pool ends as a death (its import expired, see `kill`): the death is dealt
//   with when the pool ends the thread, not when it exits.
// - Recovery: when a thread dies, the job it was running fails with WorkerDiedError and every
//   other job it held is queued again at the front, except those whose payload was transferred to
//   it (their buffers went with it: they fail too); deaths feed the crash-loop breakers. A thread
//   that cannot even be created counts as one that died before it was ready.
// - Replies are settled at most `REPLY_BUDGET` per macrotask. Node hands a port's pending messages
//   over in one go, so when threads outpace the main thread one turn of the event loop could
//   settle thousands of results (measured: 9,000 in 11 ms, 43 turns for 100,000 no-op tasks);
//   the rest wait in the inbox for the next turn, and timers and I/O run in between.

import type { ResourceLimits } from "node:worker_threads"
import * as Blocking from "@volley/core/Blocking"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { Breaker } from "./breaker.ts"
import type { Job } from "./job.ts"
import { entryModuleRefusal } from "./mainModule.ts"
import {
  decodeResult,
  encodeJob,
  isFromWorker,
  MAX_TIMER_MILLIS,
  READY,
  RESULT_FIELDS,
  RING,
  type TaskRef,
  type ToWorker
} from "./protocol.ts"
import { Queue } from "./queue.ts"
import { describeSpawnError, describeThrown, isOutOfMemory, spawnThread, type Thread as ThreadOf } from "./thread.ts"

type Thread = ThreadOf<Job>

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
  /** Task modules every thread imports before it reports ready. */
  readonly preload: ReadonlyArray<string>
  /** How long a thread waits for a module's import (see `NodeBlocking.Options.importTimeout`). */
  readonly importTimeoutMillis: number
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
  /** Threads terminated that have not exited yet. */
  readonly terminating: (n: number) => void
}

/** What the engine knows about a task (by numeric id, the same for every spelling of one module#name). */
interface TaskInfo {
  readonly ref: TaskRef
  /** Why it can never run on a thread (defined in the entry module), checked once. */
  readonly refusal: string | undefined
  /** Moving average of its run time: short tasks get several in flight per thread, long ones one. */
  avgRunMillis: number
  /** A run of it has been measured: until then `avgRunMillis` is a guess, and it goes one at a time. */
  measured: boolean
  /** One of its runs has reached an answer: its module is known sound (checked once, not per result). */
  worked: boolean
}

/** A thread's batch of results, as it arrived. */
interface Inbound {
  readonly thread: Thread
  readonly results: ReadonlyArray<unknown>
}

/** Results settled per macrotask, at most (a few µs each): ~1-3 ms of the event loop. */
const REPLY_BUDGET = 1024

export class Engine {
  private readonly options: EngineOptions
  private readonly queue = new Queue<Job>()
  /** Jobs waiting for room in a full queue ("wait" back-pressure). */
  private readonly waiting = new Queue<Job>()
  private readonly threads = new Set<Thread>()
  /** Threads in `threads` the pool has terminated (`terminating`) that have not exited yet. */
  private terminating = 0
  private readonly breaker: Breaker
  /** Modules new threads import before they report ready: declared ones, and those a thread has imported. */
  private readonly preload: Set<string>
  /** Whether modules threads import are added to `preload` (see `learn`). */
  private learning = true
  /** Modules whose import expired: not preloaded again unless declared. */
  private readonly unlearnt = new Set<string>()
  /** The modules of the layer's `tasks`. */
  private readonly declared: ReadonlySet<string>
  private readonly tasks: Array<TaskInfo | undefined> = []
  private readonly taskIds = new WeakMap<Blocking.AnyTask, number>()
  private readonly taskIdsByKey = new Map<string, number>()
  private closing = false
  private scheduled = false
  /** Batches of results received and not yet settled, oldest first (see `REPLY_BUDGET`). */
  private readonly inbox: Array<Inbound | undefined> = []
  private inboxHead = 0
  private inboxScheduled = false
  /** Set while a "drain" close waits for the pool to go idle. */
  private drained: (() => void) | undefined
  /** Set while the layer waits for minWorkers threads to be ready. */
  private warmedUp: (() => void) | undefined
  /** A thread could not be created, and that is counted on the next turn: none is tried until then. */
  private spawnRefused = false
  /** Set while the pool, refused a thread with others running, stays at its size (see `refused`). */
  private growthPause: (() => void) | undefined = undefined

  constructor(options: EngineOptions) {
    this.options = options
    this.preload = new Set(options.preload)
    this.declared = new Set(options.preload)
    this.breaker = new Breaker(options.clock, options.crashLoopDeaths, options.crashLoopCooldownMillis)
    for (let i = 0; i < options.minWorkers; i++) if (!this.spawn()) break
  }

  // ---------------------------------------------------------------------------------------------
  // Entry points

  submit(request: Blocking.Request, clock: Clock.Clock, receiver: Blocking.Receiver): Job | undefined {
    const task = request.task
    const module = task.module
    if (module === undefined) {
      receiver.fail(
        new Blocking.TaskNotFoundError({
          task: task.name,
          module: "(none)",
          reason: "the task has no module URL; pass `module: import.meta.url` to Blocking.task"
        })
      )
      return undefined
    }
    const taskId = this.taskIds.get(task) ?? this.register(task, module)
    const info = this.tasks[taskId]!
    const refused = this.refusal(task.name, module, info)
    if (refused !== undefined) {
      receiver.fail(refused)
      return undefined
    }
    const job: Job = {
      request,
      name: task.name,
      module,
      taskId,
      clock,
      receiver,
      enqueuedAt: performance.now(),
      state: "queued",
      seq: 0,
      thread: undefined,
      started: false,
      removed: false,
      timer: undefined,
      run: 0,
      grace: undefined
    }
    // Callers already waiting for room go first, even if a cancel has just made some.
    if ((this.waiting.length === 0 && this.queue.length < this.options.maxQueue) || this.makeRoom()) {
      this.queue.push(job)
    } else if (this.options.queueFull === "fail") {
      receiver.fail(new Blocking.QueueFullError({ task: task.name, capacity: this.options.maxQueue }))
      return undefined
    } else {
      job.state = "waiting"
      this.waiting.push(job)
    }
    const queueTimeout = request.queueTimeoutMillis ?? this.options.queueTimeoutMillis
    if (queueTimeout !== undefined) this.armQueueTimeout(job, queueTimeout)
    this.schedule()
    return job
  }

  /** The caller was interrupted: a queued job leaves the queue; a sent one is skipped or aborted. */
  cancel(job: Job): void {
    if (job.state === "queued" || job.state === "waiting") {
      this.unqueue(job)
      job.state = "finished"
      clearTimer(job)
    } else if (job.state === "sent") {
      job.state = "finished"
      clearTimer(job)
      this.stop(job)
    }
  }

  /** Resolves once minWorkers threads are ready, or threads die before they are ready (the breaker opened). */
  warmUp(): Promise<void> {
    return new Promise((resolve) => {
      this.warmedUp = resolve
      this.checkWarmedUp()
    })
  }

  /** Closes the pool: finishes (drain) or fails (cancel) what is queued, then ends every thread. */
  async close(mode: "drain" | "cancel"): Promise<void> {
    this.closing = true
    this.growthPause?.()
    this.warmedUp?.()
    if (mode === "cancel") {
      for (const job of [...this.waiting.drain(), ...this.queue.drain()]) this.shutDown(job)
      for (const thread of this.threads) for (const job of thread.inFlight) this.shutDown(job)
    } else if (!this.idle()) {
      await new Promise<void>((resolve) => {
        this.drained = resolve
      })
    }
    await Promise.all([...this.threads].map((thread) => this.ended(thread)))
  }

  /**
   * Terminates `thread` and resolves once it has exited, or has been terminated for a grace period.
   * One blocked in a native call exits only when the call returns (see `terminate`): closing does
   * not wait for that (the process does: Node waits for its threads as it exits).
   */
  private ended(thread: Thread): Promise<void> {
    const exit = this.terminate(thread)
    const left = thread.terminated!.at + this.options.gracePeriodMillis - this.options.clock.currentTimeMillisUnsafe()
    if (left <= 0) return Promise.resolve()
    return new Promise((resolve) => {
      const cancel = after(this.options.clock, left, resolve)
      const exited = () => {
        cancel()
        resolve()
      }
      exit.then(exited, exited)
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Dispatch

  /** Runs a dispatch round soon: many submits and replies in one tick share one round. */
  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(this.round)
  }

  private readonly round = (): void => {
    this.scheduled = false
    this.dispatch()
    const max = this.options.maxTasksPerWorker
    let starting = 0
    for (const thread of this.threads) if (thread.state === "starting") starting++
    const wanted = Math.min(
      this.options.maxWorkers - this.counted(),
      this.queue.length + this.waiting.length - starting
    )
    for (let i = 0; i < wanted; i++) if (!this.spawn()) break
    this.topUp()
    // Each post may wake a sleeping thread, which on a busy machine costs far more than the
    // message: hold jobs back while the thread still has plenty posted, so they travel in few,
    // large batches (the next batch of results triggers the send).
    let busy = 0
    for (const thread of this.threads) {
      const posted = thread.inFlight.length - thread.outbox.length
      if (thread.outbox.length > 0 && (posted * 2 <= max || thread.outbox.length * 2 >= max)) this.flush(thread)
      if (thread.inFlight.length === 0) this.becameIdle(thread)
      else busy++
    }
    this.options.observe.queueLength(this.queue.length + this.waiting.length)
    this.options.observe.utilization(busy / this.options.maxWorkers)
    if (this.drained !== undefined && this.idle()) this.drained()
  }

  /**
   * Assigns queued jobs to threads with room (into their outbox; the round posts them). Callers
   * waiting for room in a full queue move up as it empties, and are sent too if a thread has room.
   */
  private dispatch(): void {
    const max = this.options.maxTasksPerWorker
    // One clock read for the whole pass: the jobs it sends leave the queue together.
    let now: number | undefined
    for (;;) {
      for (let job = this.queue.peek(); job !== undefined; job = this.queue.peek()) {
        const info = this.tasks[job.taskId]!
        const avg = info.avgRunMillis
        // A task never measured may be long: sent ahead, its second call would wait behind the first
        // while another thread is idle or starting (new threads start only for jobs left queued).
        const thread = this.pick(info.measured ? Math.min(max, avg < 0.25 ? max : avg < 2 ? 2 : 1) : 1)
        if (thread === undefined) break
        now ??= performance.now()
        this.send(thread, this.queue.shift()!, now)
      }
      if (this.waiting.length === 0 || this.queue.length >= this.options.maxQueue) return
      while (this.waiting.length > 0 && this.queue.length < this.options.maxQueue) {
        const job = this.waiting.shift()!
        job.state = "queued"
        this.queue.push(job)
      }
    }
  }

  /**
   * The queue looks full, but jobs submitted in this tick are only dispatched by the next round:
   * let threads with room take them now, so a task is refused (or held back) only when no thread
   * can take it. Callers already waiting move up first, ahead of this one.
   */
  private makeRoom(): boolean {
    this.dispatch()
    return this.queue.length < this.options.maxQueue
  }

  /** The ready thread with the fewest jobs in flight, if it has fewer than `window`. */
  private pick(window: number): Thread | undefined {
    let best: Thread | undefined
    for (const thread of this.threads) {
      if (thread.state !== "ready" || thread.inFlight.length >= window) continue
      if (best === undefined || thread.inFlight.length < best.inFlight.length) best = thread
    }
    return best
  }

  private send(thread: Thread, job: Job, now: number): void {
    // A job sent again after its thread died keeps `thread`: its queue wait was recorded once.
    if (job.thread === undefined) {
      const waited = now - job.enqueuedAt
      this.options.observe.queueWait(waited)
      job.request.span.attribute("volley.blocking.queue_wait_ms", waited)
    }
    job.state = "sent"
    job.thread = thread
    job.run = 0
    job.seq = thread.nextSeq
    // Seqs live in an Int32Array slot; wrap before 2^31 (0 means "nothing running").
    thread.nextSeq = thread.nextSeq === 0x7fffffff ? 1 : thread.nextSeq + 1
    if (thread.inFlight.length === 0) {
      thread.worker.ref()
      thread.idleTimer?.()
      thread.idleTimer = undefined
    }
    thread.inFlight.push(job)
    thread.outbox.push(job)
    job.request.span.attribute("volley.blocking.thread_id", thread.worker.threadId)
  }

  private flush(thread: Thread): void {
    const jobs = thread.outbox
    thread.outbox = []
    const transfer: Array<Transferable> = []
    for (const job of jobs) for (const buffer of job.request.transfer) transfer.push(buffer)
    try {
      this.post(thread, jobs, transfer)
    } catch {
      // One payload cannot be cloned: send them one at a time and fail only the culprits.
      for (const job of jobs) {
        try {
          this.post(thread, [job], job.request.transfer)
        } catch (error) {
          thread.inFlight.splice(thread.inFlight.indexOf(job), 1)
          const reason = `cannot be sent to a thread: ${describeThrown(error)}`
          this.fail(job, new Blocking.InvalidPayloadError({ task: job.name, reason }))
        }
      }
      if (thread.inFlight.length === 0) this.becameIdle(thread)
    }
  }

  private post(thread: Thread, jobs: ReadonlyArray<Job>, transfer: ReadonlyArray<Transferable>): void {
    const tasks: Array<TaskRef> = []
    // Packed, not `new Array(n)`: holey arrays take the structured-clone slow path.
    const flat: Array<unknown> = []
    for (const job of jobs) {
      if (!thread.known.has(job.taskId) && !tasks.some((t) => t[0] === job.taskId)) {
        tasks.push(this.tasks[job.taskId]!.ref)
      }
      const request = job.request
      // A job with a deadline is reported the moment it starts (after its module's import) and
      // ends (see worker.ts): its run timeout counts from then, and never runs on while a job
      // after it holds its result back.
      const timed =
        (request.timeoutMillis ?? this.options.timeoutMillis) === undefined &&
        (request.queueTimeoutMillis ?? this.options.queueTimeoutMillis) === undefined
          ? 0
          : 1
      encodeJob(flat, job.seq, job.taskId, request.payload, request.span.traceId, request.span.spanId, timed)
    }
    thread.port.postMessage({ _tag: "Run", tasks, jobs: flat } satisfies ToWorker, transfer as never)
    thread.runs++
    for (const job of jobs) job.run = thread.runs
    for (const task of tasks) thread.known.add(task[0])
  }

  /** Starts threads up to minWorkers, but not while threads die before they are ready (the start-up breaker is open). */
  private topUp(): void {
    if (this.counted() >= this.options.minWorkers || this.closing || this.breaker.startupOpen()) return
    while (this.counted() < this.options.minWorkers) if (!this.spawn()) break
  }

  /**
   * The threads that count toward maxWorkers and minWorkers. One the pool has terminated takes no
   * job, and most exit at once, but V8 stops a thread only while it runs JavaScript: one blocked in
   * a native call (`execFileSync`, a synchronous SQLite query) runs on until the call returns,
   * seconds or minutes after its caller had its answer. Up to maxWorkers of those do not count, so
   * that maxWorkers threads keep working meanwhile; past that (timeouts that keep leaving threads
   * stuck) they do, and tasks wait for one to exit: at most 2 × maxWorkers threads at once.
   */
  private counted(): number {
    return this.threads.size - Math.min(this.terminating, this.options.maxWorkers)
  }

  /**
   * Nothing queued, and no job in flight that a caller waits for or that runs. A thread may still
   * hold jobs whose callers have gone (interrupted, timed out in the queue) while it imports their
   * module: a draining close ends it rather than wait for the import (up to importTimeout) for
   * nobody. A job whose caller has gone and that runs is waited for: its grace period ends it.
   */
  private idle(): boolean {
    if (this.queue.length > 0 || this.waiting.length > 0) return false
    for (const thread of this.threads) {
      if (thread.inFlight.length === 0) continue
      if (Atomics.load(thread.control, 0) > 0) return false
      for (const job of thread.inFlight) if (job.state !== "finished") return false
    }
    return true
  }

  // ---------------------------------------------------------------------------------------------
  // Replies

  /** A batch arrived: queued, and settled from an immediate with those that arrive meanwhile (see `REPLY_BUDGET`). */
  private receive(thread: Thread, results: ReadonlyArray<unknown>): void {
    this.inbox.push({ thread, results })
    if (this.inboxScheduled) return
    this.inboxScheduled = true
    setImmediate(this.drainInbox)
  }

  private readonly drainInbox = (): void => {
    this.inboxScheduled = false
    this.settleInbox(REPLY_BUDGET)
    if (this.inboxHead < this.inbox.length) {
      this.inboxScheduled = true
      setImmediate(this.drainInbox)
    }
  }

  /** Settles queued batches, oldest first, until about `budget` results are settled. */
  private settleInbox(budget: number): void {
    let settled = 0
    while (settled < budget && this.inboxHead < this.inbox.length) {
      const { thread, results } = this.inbox[this.inboxHead]!
      this.inbox[this.inboxHead++] = undefined
      this.results(thread, results)
      settled += results.length / RESULT_FIELDS
    }
    if (this.inboxHead === this.inbox.length) {
      this.inbox.length = 0
      this.inboxHead = 0
    }
  }

  /** A thread's batch of results: each is matched to its job, recorded and settled. */
  private results(thread: Thread, results: ReadonlyArray<unknown>): void {
    thread.received += results.length / RESULT_FIELDS
    for (let i = 0; i < results.length; i += RESULT_FIELDS) {
      const { seq, reply, runMillis } = decodeResult(results, i)
      // Replies come in the order jobs were sent; the search is for the rare out-of-order case.
      let job = thread.inFlight[0]
      if (job?.seq === seq) thread.inFlight.shift()
      else {
        const index = thread.inFlight.findIndex((job) => job.seq === seq)
        if (index < 0) continue
        job = thread.inFlight.splice(index, 1)[0]!
      }
      job.grace?.()
      job.grace = undefined
      if (reply._tag !== "Cancelled") {
        const info = this.tasks[job.taskId]!
        info.avgRunMillis += (runMillis - info.avgRunMillis) / 8
        info.measured = true
        this.options.observe.runTime(runMillis)
        if (reply._tag !== "NotFound" && !info.worked) {
          info.worked = true
          this.moduleWorked(job.module)
        }
      }
      if (job.state !== "sent") continue
      job.request.span.attribute("volley.blocking.run_ms", runMillis)
      if (reply._tag === "NotFound") {
        this.fail(job, new Blocking.TaskNotFoundError({ task: job.name, module: job.module, reason: reply.reason }))
      } else if (reply._tag === "Cancelled") this.fail(job, new Blocking.ExecutorShutDownError({ task: job.name }))
      else this.succeed(job, reply)
    }
    // Idle is decided in the round, after refilling: no unref/idle-timer churn between two tasks.
    this.schedule()
  }

  /** A task of `module` ran to an answer: the module is sound (its deaths stop counting), and new threads preload it. */
  private moduleWorked(module: string): void {
    this.breaker.moduleWorked(module)
    this.learn(module)
  }

  /**
   * New threads preload `module` from now on, unless the pool has stopped learning (a thread died
   * before it was ready while preloading what it had learnt) or the module's import once expired.
   */
  private learn(module: string): void {
    if (this.learning && !this.unlearnt.has(module)) this.preload.add(module)
  }

  private succeed(job: Job, reply: Blocking.Reply): void {
    job.state = "finished"
    clearTimer(job)
    job.receiver.succeed(reply)
  }

  private fail(job: Job, error: Blocking.BlockingError): void {
    job.state = "finished"
    clearTimer(job)
    job.receiver.fail(error)
  }

  private shutDown(job: Job): void {
    if (job.state !== "finished") this.fail(job, new Blocking.ExecutorShutDownError({ task: job.name }))
  }

  // ---------------------------------------------------------------------------------------------
  // Deadlines and cancellation

  /** The queue timeout runs until the job starts: waiting in a thread's prefetch counts as queued too. */
  private armQueueTimeout(job: Job, timeoutMillis: number): void {
    job.timer = after(job.clock, timeoutMillis, () => {
      if (job.started || job.state === "finished") return
      const sent = job.state === "sent"
      if (!sent) this.unqueue(job)
      this.fail(job, new Blocking.TaskTimeoutError({ task: job.name, phase: "queued", timeoutMillis }))
      if (sent) this.stop(job)
    })
  }

  /**
   * The thread reports that job `seq` starts, its module imported (see worker.ts): a timed job's
   * queue timeout ends and its run timeout starts; new threads preload its module.
   */
  private begun(thread: Thread, seq: number): void {
    const job = thread.inFlight.find((job) => job.seq === seq)
    if (job === undefined) return
    this.learn(job.module)
    this.started(job)
  }

  private started(job: Job): void {
    if (job.state !== "sent" || job.started) return
    job.started = true
    clearTimer(job)
    const timeout = job.request.timeoutMillis ?? this.options.timeoutMillis
    if (timeout === undefined) return
    job.timer = after(job.clock, timeout, () => {
      if (job.state !== "sent") return
      this.fail(job, new Blocking.TaskTimeoutError({ task: job.name, phase: "running", timeoutMillis: timeout }))
      this.stop(job)
    })
  }

  // A dispatch round follows: it moves a caller waiting for room up and updates the queue gauge.
  private unqueue(job: Job): void {
    if (job.state === "queued") this.queue.remove(job)
    else this.waiting.remove(job)
    this.schedule()
  }

  /**
   * Second phase of cancellation: skip it if not started, else abort, then terminate after the
   * grace period if it still runs. Whether it runs is read from the thread (control[0]), not
   * inferred from `inFlight`: a job first in line may have ended with its result held back in the
   * thread while the next one runs, and that one must not be killed for its sake. A job not
   * started (sent ahead, or waiting for its module's import) is skipped by the thread: it reads the
   * cancellation ring before it starts a job.
   */
  private stop(job: Job): void {
    const thread = job.thread!
    // A draining close may have waited only for this job: it need not, unless it runs (see `idle`).
    if (this.drained !== undefined) this.schedule()
    Atomics.store(thread.control, 1 + (job.seq % RING), job.seq)
    if (Atomics.load(thread.control, 0) !== job.seq) return
    thread.port.postMessage({ _tag: "Abort", seq: job.seq } satisfies ToWorker)
    job.grace = after(job.clock, this.options.gracePeriodMillis, () => {
      job.grace = undefined
      if (Atomics.load(thread.control, 0) === job.seq) void this.terminate(thread)
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Threads

  /** Starts a thread; false if it could not be created (see `refused`). */
  private spawn(): boolean {
    if (this.spawnRefused || this.growthPause !== undefined) return false
    let thread: Thread
    try {
      thread = spawnThread(
        this.options.workerUrl,
        this.options.resourceLimits,
        [...this.preload],
        this.options.importTimeoutMillis
      )
    } catch (error) {
      // `new Worker` throws when the OS refuses a thread (EAGAIN at a container's pids limit, out of
      // memory). Thrown from here it would escape the round's microtask as an uncaught exception,
      // leaving the jobs it was started for queued for good.
      this.spawnRefused = true
      const cause = describeSpawnError(error)
      setImmediate(() => this.refused(cause))
      return false
    }
    this.threads.add(thread)
    thread.learned = this.preload.size > this.declared.size
    // Its preloads' imports block it if it is not ready by then (its own import timer cannot fire).
    this.watchImport(thread, BOOT_MILLIS, () =>
      // From the thread, not from `state`: its Ready may wait in the port while this thread was busy.
      thread.state === "starting" && Atomics.load(thread.control, READY) === 0
        ? `the thread was not ready ${this.importBoundMillis() + BOOT_MILLIS} ms after it started: importing the modules it preloads keeps it busy (importTimeout)`
        : undefined
    )
    thread.port.on("message", (message: unknown) => {
      if (!isFromWorker(message)) return
      // Any word from the thread: the import it was bounded by (if any) no longer blocks it.
      thread.importWatch?.()
      thread.importWatch = undefined
      if (message._tag === "Importing") this.importing(thread, message.seq)
      else if (message._tag === "Synced") this.synced(thread, message.posted)
      else if (message._tag === "Unreadable") this.unreadable(thread, message.run, message.reason)
      else if (message._tag === "Done") this.receive(thread, message.results)
      else if (message._tag === "Started") {
        if (message.results.length > 0) this.receive(thread, message.results)
        // At once, not after the results queued before it: the run timeout starts when the job does.
        this.begun(thread, message.seq)
      } else if (message._tag === "Expired") {
        // Unless the pool has ended it already (a close, a grace period): that is no death.
        if (thread.terminated === undefined) {
          thread.expired = message.module
          this.kill(thread, message.reason)
        }
      } else if (thread.state === "starting") this.ready(thread)
    })
    // A message the thread could send but this thread cannot read (nested deeper than its smaller
    // stack deserializes): Node drops it, and the results in it with it. Their callers would wait
    // for good, and a draining close with them: the thread says how many results it has posted.
    thread.port.on("messageerror", (error: unknown) => {
      thread.unreadable = describeThrown(error)
      thread.port.postMessage({ _tag: "Sync" } satisfies ToWorker)
      // The lost message may be a Started (which carries the results held back): its job's run
      // timeout would never start, and a job that runs for good would hold its thread, and the
      // answer to Sync, for good. The job the thread runs now is read from it, as a cancel does.
      const running = Atomics.load(thread.control, 0)
      if (running > 0) {
        const job = thread.inFlight.find((job) => job.seq === running)
        if (job !== undefined) this.started(job)
      }
    })
    // `error` carries whatever the thread threw, uncaught: null, undefined and symbols included.
    thread.worker.on("error", (error: unknown) => {
      thread.outOfMemory ||= isOutOfMemory(error)
      thread.lastError = describeThrown(error)
    })
    thread.worker.on("exit", (code) => this.exited(thread, code))
    return true
  }

  /**
   * A thread could not be created. With threads running, the pool goes on at the size it has and
   * tries to grow again after GROWTH_PAUSE_MILLIS (never while it drains; a build waiting for
   * minWorkers threads ends with those it has): the threads it has take the queued jobs, where
   * counting it as a crash would open the start-up breaker and fail every call (a pool growing
   * into a container's pids limit is not crash-looping). With none, it is counted like a thread
   * that died before it was ready, on a later turn, as its exit would be: the round that follows
   * tries another, so the jobs wait, as for any death at start-up, until a thread starts or the
   * start-up breaker opens and fails them; never a retry loop within one turn.
   */
  private refused(cause: string): void {
    this.spawnRefused = false
    this.options.observe.crash()
    if (this.threads.size > 0) {
      if (this.closing) {
        // Draining: the threads the pool has finish the queue; it does not try to grow again.
        this.growthPause = () => {
          this.growthPause = undefined
        }
        return
      }
      const cancel = after(this.options.clock, GROWTH_PAUSE_MILLIS, () => {
        this.growthPause = undefined
        this.schedule()
      })
      this.growthPause = () => {
        this.growthPause = undefined
        cancel()
      }
      // A build waiting for minWorkers threads waits no longer: the pool has what the OS allows.
      this.checkWarmedUp()
      return
    }
    this.countDeath(false, undefined, cause)
    this.checkWarmedUp()
    this.schedule()
  }

  /**
   * Job `seq` waits on `thread` for its module's import. The thread bounds the import itself
   * (`importTimeout`, see worker.ts `expire`), but not one that keeps it busy (a synchronous loop at
   * the module's top level): that one would hold the thread, its callers and a draining close for good.
   * The pool ends the thread if it is still importing for the job a grace period after the bound.
   */
  private importing(thread: Thread, seq: number): void {
    const job = thread.inFlight.find((job) => job.seq === seq)
    if (job === undefined) return
    this.watchImport(thread, 0, () => {
      if (Atomics.load(thread.control, 0) !== -seq) return undefined
      thread.expired = job.module
      return `the import of ${job.module} did not settle within ${this.options.importTimeoutMillis} ms (importTimeout), its top-level code keeping the thread busy`
    })
  }

  /** The import bound the pool keeps beside the thread's own, which a blocked thread cannot keep. */
  private importBoundMillis(): number {
    return this.options.importTimeoutMillis + this.options.gracePeriodMillis
  }

  /**
   * Ends `thread` as a death once the import bound and `extraMillis` have passed with no word
   * from it, if `blocked` then says why (the death is then counted as the thread's `expired`
   * import's, or as a death before it was ready).
   */
  private watchImport(thread: Thread, extraMillis: number, blocked: () => string | undefined): void {
    const millis = this.importBoundMillis() + extraMillis
    // Node fires a timer set past this at once; the thread's own timer is not set either.
    if (!(millis <= MAX_TIMER_MILLIS)) return
    // Real time, as the import it bounds and the thread's own timer run on, not the pool's clock
    // (a TestClock moved on would end a thread importing as it should); unref'd, as it is never
    // what keeps the process alive.
    const timer = setTimeout(() => {
      thread.importWatch = undefined
      if (thread.state === "terminating") return
      const reason = blocked()
      if (reason !== undefined) this.kill(thread, reason)
    }, millis)
    timer.unref()
    thread.importWatch = () => clearTimeout(timer)
  }

  /**
   * The thread has posted `posted` results. Those this side has not received were in a message it
   * could not read: results arrive in the order the jobs were sent and each settles (and leaves
   * `inFlight`) as it arrives, so they are the first jobs still in flight. They fail with
   * InvalidResultError, as a result the inline executor cannot clone does.
   */
  private synced(thread: Thread, posted: number): void {
    this.settleInbox(Number.POSITIVE_INFINITY)
    const reason = `cannot be received from its thread: ${thread.unreadable ?? "the message could not be read"}`
    for (; thread.received < posted && thread.inFlight.length > 0; thread.received++) {
      const job = thread.inFlight.shift()!
      job.grace?.()
      job.grace = undefined
      if (job.state === "sent") this.fail(job, new Blocking.InvalidResultError({ task: job.name, reason }))
    }
    this.schedule()
  }

  /**
   * The thread could not read Run message `run` (a payload nested deeper than its stack, which
   * `resourceLimits` may make smaller than this thread's, deserializes): its jobs never reached the
   * thread and fail with InvalidPayloadError, as one this side cannot send does. The tasks it
   * announced are announced again.
   */
  private unreadable(thread: Thread, run: number, reason: string): void {
    const lost: Array<Job> = []
    for (let i = thread.inFlight.length - 1; i >= 0; i--) {
      if (thread.inFlight[i]!.run === run) lost.unshift(...thread.inFlight.splice(i, 1))
    }
    // Every task it was told of is announced again, at once: jobs sent after the lost Run, on their
    // way already, do not announce the tasks it did, and the thread holds them until it hears them.
    const tasks: Array<TaskRef> = []
    for (const id of thread.known) tasks.push(this.tasks[id]!.ref)
    if (tasks.length > 0) {
      thread.port.postMessage({ _tag: "Run", tasks, jobs: [] } satisfies ToWorker)
      thread.runs++
    }
    const why = `cannot be read by its thread: ${reason}`
    for (const job of lost) {
      job.grace?.()
      job.grace = undefined
      if (job.state === "sent") this.fail(job, new Blocking.InvalidPayloadError({ task: job.name, reason: why }))
    }
    this.schedule()
  }

  /** The thread has imported its preloads and takes jobs. */
  private ready(thread: Thread): void {
    thread.state = "ready"
    this.breaker.threadReady()
    this.becameIdle(thread)
    this.checkWarmedUp()
    this.schedule()
  }

  /** An idle thread is unref'd; its idle timer (on the Effect clock, so tests drive it) ends it if the pool can spare it. */
  private becameIdle(thread: Thread): void {
    if (thread.inFlight.length > 0 || thread.state !== "ready" || thread.idleTimer !== undefined) return
    thread.worker.unref()
    thread.idleTimer = after(this.options.clock, this.options.idleTimeoutMillis, () => {
      thread.idleTimer = undefined
      if (thread.inFlight.length === 0 && this.staying() > this.options.minWorkers) void this.terminate(thread)
    })
  }

  /**
   * Threads that stay: not those terminating (timers that fire together would each count the
   * others and end them all), nor those starting (they may die before they are ready).
   */
  private staying(): number {
    let n = 0
    for (const thread of this.threads) if (thread.state === "ready") n++
    return n
  }

  /**
   * Ends a thread on purpose (idle, grace period over, shutdown). The jobs it holds run elsewhere at
   * once, not when it exits: V8 stops a thread only when it runs JavaScript, so one blocked in a
   * native call (`execFileSync`, a synchronous SQLite query, `scryptSync`) exits when that returns,
   * and the jobs sent ahead to it waited that long (seconds, minutes) while other threads could run them.
   */
  private terminate(thread: Thread): Promise<unknown> {
    if (thread.terminated === undefined) {
      this.end(thread)
      if (thread.inFlight.length > 0) {
        this.failLost(this.takeBack(thread, undefined).lost, "was terminated", undefined, false)
      }
      // Its jobs queued again, and a thread started in its place if it leaves tasks waiting (see `counted`).
      this.schedule()
    }
    return thread.terminated!.exit
  }

  /**
   * Ends a thread not ended yet as a death: its import expired (the thread said so, or it keeps
   * the thread busy past the pool's bound, see `watchImport`). Dealt with now as an unexpected exit
   * is (`died`: the job whose module it imports fails, the others run elsewhere, the breaker counts
   * the death), not when it exits: one blocked in a native call at a module's top level exits when
   * the call returns, and until then it would hold its jobs and count toward maxWorkers.
   */
  private kill(thread: Thread, reason: string): void {
    // Results it sent before are settled first: those jobs finished.
    this.settleInbox(Number.POSITIVE_INFINITY)
    thread.lastError = reason
    const wasReady = thread.state === "ready"
    this.end(thread)
    this.died(thread, wasReady, undefined)
    this.checkWarmedUp()
    this.schedule()
  }

  /** Terminates `thread`, which takes no job from now on and stops counting toward maxWorkers (see `counted`). */
  private end(thread: Thread): void {
    thread.state = "terminating"
    thread.terminated = { at: this.options.clock.currentTimeMillisUnsafe(), exit: thread.worker.terminate() }
    this.options.observe.terminating(++this.terminating)
    thread.idleTimer?.()
    thread.idleTimer = undefined
    thread.importWatch?.()
    thread.importWatch = undefined
  }

  /**
   * Takes back the jobs `thread` holds, which it has not reported: each one still waited for runs
   * on another thread (queued again at the front), but one posted with a transfer list is returned
   * in `lost` (its buffers went to the thread: sent again it would fail as detached). The job with
   * seq `running` (the one a dead thread was running) is returned as `blamed`, for the caller.
   */
  private takeBack(
    thread: Thread,
    running: number | undefined
  ): { readonly blamed: Job | undefined; readonly lost: Array<Job> } {
    let blamed: Job | undefined
    const lost: Array<Job> = []
    for (const job of thread.inFlight) {
      job.grace?.()
      job.grace = undefined
      if (job.seq === running) {
        blamed = job
        continue
      }
      if (job.state !== "sent") continue
      if (job.request.transfer.length > 0 && !thread.outbox.includes(job)) lost.push(job)
      else {
        // It never ran (or its result was lost with the thread): run it on another thread.
        if (job.started) clearTimer(job)
        job.state = "queued"
        job.started = false
        this.queue.pushFront(job)
      }
    }
    thread.inFlight.length = 0
    thread.outbox = []
    return { blamed, lost }
  }

  /** Fails the jobs whose transferred payload went with their thread (see `takeBack`). */
  private failLost(lost: ReadonlyArray<Job>, how: string, code: number | undefined, expired: boolean): void {
    // A thread whose import expired ran nothing after it: the task did not run.
    const ran = expired ? " (it did not run)" : " (it may have run)"
    const detail = `its thread ${how} before it reported the task, and the task's transferred payload was lost with the thread, so it is not run again${ran}`
    for (const job of lost) {
      if (job.state === "sent") {
        this.fail(job, new Blocking.WorkerDiedError({ task: job.name, reason: "exit", exitCode: code, detail }))
      }
    }
  }

  /**
   * A thread exited. One the pool ended (`terminate`, `kill`) was dealt with then: it is no longer
   * terminating. Any other died unexpectedly (see `died`). The round that follows tops the pool up
   * to minWorkers.
   */
  private exited(thread: Thread, code: number): void {
    // Results it sent before it died are settled first: those jobs finished.
    this.settleInbox(Number.POSITIVE_INFINITY)
    this.threads.delete(thread)
    if (thread.terminated !== undefined) this.options.observe.terminating(--this.terminating)
    else {
      thread.idleTimer?.()
      thread.idleTimer = undefined
      thread.importWatch?.()
      thread.importWatch = undefined
      this.died(thread, thread.state === "ready", code)
    }
    this.checkWarmedUp()
    this.schedule()
  }

  /**
   * A thread died (`code`: its exit code, if it has exited). The job it was running (control[0],
   * or whose module it was importing: -seq) fails with WorkerDiedError; every other job it held
   * (sent ahead, or finished but not yet reported) is queued again at the front, to run on another
   * thread, but one already posted with a transfer list fails with WorkerDiedError too: its
   * buffers were moved to the dead thread, and sent again they fail as detached. The death feeds
   * the crash-loop breakers.
   */
  private died(thread: Thread, wasReady: boolean, code: number | undefined): void {
    this.options.observe.crash()
    // The job it was running, or whose module it was importing: its module is blamed for the
    // death even when the job already ended for its caller (timed out in the queue, interrupted),
    // and it fails with WorkerDiedError if not.
    const { blamed, lost } = this.takeBack(thread, Math.abs(Atomics.load(thread.control, 0)))
    const culprit = blamed?.state === "sent" ? blamed : undefined
    // Failed once the pool is consistent again: its caller, resumed here, may close the pool.
    if (culprit !== undefined) {
      this.fail(
        culprit,
        new Blocking.WorkerDiedError({
          task: culprit.name,
          reason: thread.outOfMemory ? "out-of-memory" : "exit",
          exitCode: code,
          detail: thread.lastError ?? "the thread exited while running the task"
        })
      )
    }
    const cause = thread.lastError ?? `exit code ${code}`
    this.failLost(lost, `died (${cause})`, code, thread.expired !== undefined)
    if (thread.expired !== undefined && !this.declared.has(thread.expired)) {
      // An import that expired is its module's death, whether the thread was ready or importing it
      // as a preload it had learnt (a module that imported in time before): threads started from
      // now on import it only for its own tasks, and the other modules' tasks are not refused.
      this.preload.delete(thread.expired)
      this.unlearnt.add(thread.expired)
      this.moduleDeath(thread.expired, cause)
    } else if (!wasReady && thread.learned) {
      // Dead before it was ready while importing modules the pool had learnt (each imported fine
      // on a thread of its own, but together they may not: too much for `resourceLimits`, say):
      // preloading them was only to save time, so threads from now on import declared ones only,
      // and this death does not count against start-up (the next thread's would). For good: a
      // module learnt again would kill the threads that preload it again, uncounted.
      this.learning = false
      for (const module of this.preload) if (!this.declared.has(module)) this.preload.delete(module)
    } else this.countDeath(wasReady, blamed?.module, cause)
  }

  private countDeath(wasReady: boolean, module: string | undefined, cause: string): void {
    if (!wasReady) {
      const opened = this.breaker.startupDeath(cause)
      if (opened !== undefined) this.failQueued(() => true, opened)
    } else if (module !== undefined) this.moduleDeath(module, cause)
  }

  private moduleDeath(module: string, cause: string): void {
    const opened = this.breaker.moduleDeath(module, cause)
    if (opened !== undefined) this.failQueued((job) => job.module === module, opened)
  }

  /** The breaker opened: queued jobs it refuses fail now rather than start another doomed thread. */
  private failQueued(which: (job: Job) => boolean, detail: string): void {
    const refused: Array<Job> = []
    for (const queue of [this.queue, this.waiting]) {
      const kept: Array<Job> = []
      for (const job of queue.drain()) (which(job) ? refused : kept).push(job)
      for (const job of kept) queue.push(job)
    }
    // Failed once the queues are whole again: a caller resumed here may cancel other jobs.
    for (const job of refused) if (job.state !== "finished") this.fail(job, crashLoop(job.name, detail))
  }

  private checkWarmedUp(): void {
    if (this.warmedUp === undefined) return
    if (
      this.closing ||
      this.staying() >= this.options.minWorkers ||
      this.breaker.startupOpen() ||
      this.growthPause !== undefined
    ) {
      this.warmedUp()
      this.warmedUp = undefined
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Tasks

  /** A numeric id per task object; every spelling of one module and name shares it. */
  private register(task: Blocking.AnyTask, module: string): number {
    const known = this.taskIds.get(task)
    if (known !== undefined) return known
    // Unambiguous: module URLs and task names may both contain "#".
    const key = JSON.stringify([module, task.name])
    let id = this.taskIdsByKey.get(key)
    if (id === undefined) {
      id = this.tasks.length
      this.taskIdsByKey.set(key, id)
      this.tasks.push({
        ref: [id, module, task.name],
        refusal: entryModuleRefusal(module),
        avgRunMillis: 1,
        measured: false,
        worked: false
      })
    }
    this.taskIds.set(task, id)
    return id
  }

  private refusal(name: string, module: string, info: TaskInfo): Blocking.BlockingError | undefined {
    if (this.closing) return new Blocking.ExecutorShutDownError({ task: name })
    if (info.refusal !== undefined) return new Blocking.TaskNotFoundError({ task: name, module, reason: info.refusal })
    const reason = this.breaker.refusal(module)
    return reason === undefined ? undefined : crashLoop(name, reason)
  }
}

const crashLoop = (task: string, detail: string) =>
  new Blocking.WorkerDiedError({ task, reason: "crash-loop", exitCode: undefined, detail })

const clearTimer = (job: Job): void => {
  job.timer?.()
  job.timer = undefined
}

/**
 * Beyond the import bound, how long a thread may take to start before the pool takes it that its
 * preloads' imports block it: starting a thread (loading the worker and what it imports) takes
 * tens to hundreds of ms, more on a loaded machine.
 */
const BOOT_MILLIS = 5_000

/** How long a pool refused a thread (with others running) waits before it tries to grow again. */
const GROWTH_PAUSE_MILLIS = 1_000

/** Calls `f` after `millis` on `clock` (a TestClock in tests); returns a canceller. */
const after = (clock: Clock.Clock, millis: number, f: () => void): (() => void) => {
  const fiber = Effect.runFork(clock.sleep(Duration.millis(millis)))
  fiber.addObserver((exit) => {
    if (exit._tag === "Success") f()
  })
  return () => fiber.interruptUnsafe()
}
