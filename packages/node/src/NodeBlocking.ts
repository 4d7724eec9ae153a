/**
 * A `Blocking.BlockingExecutor` on a pool of `node:worker_threads`.
 *
 * Tasks live in ES modules (`.js`, or `.ts` on Node >= 22.18 with type
 * stripping) and are found by the module URL and name they were defined
 * with. The pool grows to `maxWorkers` under load and shrinks after
 * `idleTimeout`; its queue is bounded with back-pressure or fail-fast;
 * interrupting a caller removes a queued task or aborts a running one and,
 * after `gracePeriod`, terminates and replaces its thread. A thread that dies
 * (throw outside the handler, `process.exit`, heap limit) fails the task it
 * was running; the rest are re-run on other threads, but those whose payload
 * was transferred to it (`transfer`) fail too. A module that kills
 * every thread trips a crash-loop breaker and fails fast. A thread that
 * cannot be created (`new Worker` throws: a container's pids limit, no
 * memory) counts as one that died before it was ready when the pool has no
 * other; with threads running, the pool stays at its size for a second and
 * tries to grow again, its threads taking the queued calls. Closing the layer
 * drains or cancels the queue, then terminates every thread.
 *
 * Start-up: a thread's first task waits for the thread to import the task's
 * module (with `effect/Schema`, most of a thread's start-up). Declare the tasks
 * on the layer (`tasks`) and threads import their modules as they start; add
 * `minWorkers` and `waitForWorkers: true` to have them ready when the layer is
 * built. Threads started later import the modules other threads have imported.
 * A task's `timeout` does not count the import: it starts when the handler does.
 * Threads turn on Node's module compile cache (`module.enableCompileCache`, in
 * the OS temp directory unless `NODE_COMPILE_CACHE` names one; off with
 * `NODE_DISABLE_COMPILE_CACHE=1`), so every thread after the first, in this
 * process or a later one, loads compiled code instead of compiling it again.
 *
 * Caveats:
 * - A synchronous handler never sees its `signal` abort while it runs (the
 *   abort reaches the thread's event loop only when the handler returns): it
 *   runs to its end, or its thread is terminated after `gracePeriod`. A
 *   thread blocked in a native call (`execFileSync`, a synchronous SQLite
 *   query; in a handler, or at a module's top level past `importTimeout`)
 *   ends only when the call returns: V8 stops a thread only while it runs
 *   JavaScript. Meanwhile the tasks sent ahead to it run elsewhere and a
 *   new thread takes its place: up to `maxWorkers` such threads do not count
 *   toward `maxWorkers`, past that tasks wait for one to exit
 *   (`metrics.terminating` counts them). Closing the layer waits for such a
 *   thread `gracePeriod` at most, but the process exits only once the call
 *   returns (Node waits for its threads as it exits): bound such calls.
 * - Tasks can run more than once. Short tasks are sent ahead to a thread in
 *   batches, and a thread reports results in batches (at most 1 ms apart
 *   while it has work); when a thread dies or is terminated after a grace
 *   period, the tasks it held that it had not reported, whether they ran or
 *   not, run again on another thread. Make handlers whose effects must not
 *   repeat idempotent, or use `maxTasksPerWorker: 1`, so a thread holds only
 *   the task it runs. A held task whose payload was transferred (`transfer`)
 *   cannot run again, its buffers moved to the dead thread: it fails with
 *   `WorkerDiedError` (reason "exit").
 * - A result a thread can send but the pool's thread cannot read (nested
 *   thousands deep: a thread's stack is larger) fails with `InvalidResultError`,
 *   and so do the results that travelled in the same message (they are lost with it).
 * - A task sent ahead waits behind the one its thread is running, even if
 *   another thread is free, and so does the result of one that finished just
 *   before it; for short tasks that sometimes run long, lower `maxTasksPerWorker`.
 *
 * Why not Effect's RPC worker pool: measured on Effect 4.1 it does 10–40k
 * no-op tasks/s, never terminates a thread blocked in an interrupted task, and
 * a `process.exit` in one worker failed calls running on healthy ones. This
 * pool keeps Effect's scoping and typed errors, and owns the engine; its threads load only the
 * task modules (imported while the pool starts when declared with `tasks`).
 *
 * @since 0.1.0
 */

import "./internal/runtime.ts"
import { availableParallelism } from "node:os"
import type { ResourceLimits } from "node:worker_threads"
import * as Blocking from "@volley/core/Blocking"
import * as Validate from "@volley/core/Options"
import type * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { Engine } from "./internal/pool/engine.ts"
import { RING } from "./internal/pool/protocol.ts"

/**
 * Pool options.
 *
 * @example
 * ```ts
 * import { NodeBlocking } from "@volley/node"
 *
 * const options: NodeBlocking.Options = { name: "images", minWorkers: 1, maxWorkers: 4, maxQueue: 1000, queueFull: "fail" }
 * const Pool = NodeBlocking.layer(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Names the pool in its metrics (a `pool` attribute), so two pools in one process report
   * apart. Unnamed pools share the unattributed series.
   * @default none
   */
  readonly name?: string | undefined
  /**
   * Threads kept alive even when idle; started when the layer is built. At most `maxWorkers`.
   * Threads that die before they are ready, or cannot be created, do not fail the build: they
   * count toward the start-up breaker (see `crashLoop`).
   * @default 0
   */
  readonly minWorkers?: number | undefined
  /**
   * Tasks whose modules every thread imports as it starts, before it takes work, so the first
   * call does not wait for the import. Modules a thread has imported for a task are preloaded by
   * threads started later in any case, until a thread dies before it is ready while importing
   * them (modules that imported fine one by one may not together, within `resourceLimits` say):
   * from then on new threads preload only these, and that death does not count toward the
   * start-up breaker.
   * @default []
   */
  readonly tasks?: ReadonlyArray<Blocking.AnyTask> | undefined
  /**
   * Building the layer waits until `minWorkers` threads have started and imported `tasks`
   * (or until threads keep dying before they are ready, or cannot be created: the crash-loop
   * breaker opened, and calls fail fast; or until the OS refuses a thread while others run: the
   * pool goes on with those).
   * @default false
   */
  readonly waitForWorkers?: boolean | undefined
  /**
   * Most threads working at once, at most 1024: each thread is a V8 isolate of its own (about
   * 10 MB and tens of milliseconds to start), and a pool starts up to one per queued task, so a
   * larger value is a typo, not a plan. Threads the pool has terminated that are stuck in a native
   * call do not count, up to this many of them (see the caveats).
   * @default os.availableParallelism()
   */
  readonly maxWorkers?: number | undefined
  /**
   * An idle thread above `minWorkers` is terminated after this long. Until then its timer keeps
   * the process alive: close the layer's scope (as `NodeRuntime.runMain` does) to exit at once.
   * @default "30 seconds"
   */
  readonly idleTimeout?: Duration.Input | undefined
  /**
   * Most tasks waiting for a thread, at least 1; a task a ready thread can take at once does not
   * wait (tasks do wait while the pool's threads start).
   * @default Infinity
   */
  readonly maxQueue?: number | undefined
  /**
   * When the queue is full: `"wait"` suspends the caller until there is room, `"fail"` fails with `QueueFullError`.
   * A `Blocking.runAll` batch submits a window of tasks at once (its `concurrency`, 1,024 by default): with
   * `"fail"`, those past `maxQueue` plus the free threads fail, so give such a batch a `concurrency` within them.
   * @default "wait"
   */
  readonly queueFull?: "wait" | "fail" | undefined
  /**
   * Default run timeout, counted from when a task starts running, once its thread has imported
   * the task's module (the import counts as queue time); more than 0 when set. A thread reports
   * when a timed task starts (so the pool can start its clock) and when it ends, so very short
   * timed tasks travel back in two messages each instead of in batches.
   * @default none
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * Default bound on the time a task waits before it starts running (in the queue, sent ahead to
   * a thread that is still running another task, or while its thread imports the task's module);
   * more than 0 when set.
   * @default none
   */
  readonly queueTimeout?: Duration.Input | undefined
  /**
   * How long a thread waits for a task module's import (its top-level code and `await`), so that
   * an import that never settles (a top-level `await` on a connection that never answers) cannot
   * hold its callers, or a `waitForWorkers` layer build, for good. Past it the thread ends, as
   * when a module kills the thread that imports it: the task waiting for the import fails with
   * `WorkerDiedError` (its `detail` says so), the thread's other tasks run on other threads (one
   * whose payload was transferred fails with `WorkerDiedError`: its buffers went with the thread),
   * and `crashLoop.deaths` such deaths in a row open the crash-loop breaker for the module (for a
   * module of `tasks`, imported as threads start, the start-up breaker; a module that imported in
   * time before is no longer imported by new threads before they are ready). More than 0. An import
   * that keeps its thread busy past this (a synchronous loop at the module's top level, or a very
   * large module graph compiled on a cold cache), which the thread's own timer cannot end, is
   * ended by the pool a `gracePeriod` later, the same way (and a thread still starting, its
   * preloads keeping it busy, 5 s later still, as a death before it was ready).
   * @default "60 seconds"
   */
  readonly importTimeout?: Duration.Input | undefined
  /**
   * How long an aborted (interrupted or timed-out) task may keep running before its thread is terminated,
   * and how long closing the layer waits for a terminated thread to exit (one blocked in a native call
   * exits only when the call returns).
   * @default "1 second"
   */
  readonly gracePeriod?: Duration.Input | undefined
  /**
   * Most tasks sent ahead to one thread when tasks are short (under 0.25 ms on average; under
   * 2 ms, two; longer tasks go one at a time, and so does a task until a run of it has been
   * measured, so that concurrent first calls start on threads of their own). Sending ahead saves
   * thread wake-ups. At most 1024.
   * @default 64
   */
  readonly maxTasksPerWorker?: number | undefined
  /**
   * Heap and stack limits of each thread; a thread that exceeds them fails its task with `WorkerDiedError` ("out-of-memory").
   * Each must be > 0, `maxOldGenerationSizeMb` >= 4 and `stackSizeMb` >= 0.5: below those Node aborts the whole process;
   * `codeRangeSizeMb` and `stackSizeMb` at most 1048576 (1 TiB): above that it aborts or segfaults.
   * A `stackSizeMb` below the main thread's (about 1 MB) leaves threads unable to read payloads nested
   * deeper than it allows (a few thousand levels): such a payload fails with `InvalidPayloadError`, and so
   * do the payloads sent to its thread in the same message.
   * @default Node's defaults
   */
  readonly resourceLimits?: ResourceLimits | undefined
  /**
   * What closing the layer does with unfinished tasks: `"drain"` waits for them to finish (with
   * no bound of its own: give tasks a `timeout`), `"cancel"` fails them with
   * `ExecutorShutDownError` and terminates the threads without a grace period. Either way the close
   * then waits for each thread to exit, `gracePeriod` after it was terminated at most.
   * @default "drain"
   */
  readonly shutdown?: "drain" | "cancel" | undefined
  /**
   * The crash-loop breaker. When `deaths` threads in a row die while running tasks of one
   * module before any task of that module has finished (a module that kills the thread that
   * imports it), that module's tasks fail fast with `WorkerDiedError` (`"crash-loop"`) for
   * `cooldown`; when `deaths` threads in a row die before they are ready (a `resourceLimits`
   * too small to start) or cannot be created (`new Worker` refused by the OS) while no thread
   * runs, every task does.
   * After the cool-down tasks are tried again, and one more death re-opens the breaker. The
   * error's `detail` names the module and the last death's cause.
   * @default { deaths: 3, cooldown: "10 seconds" }
   */
  readonly crashLoop?:
    | { readonly deaths?: number | undefined; readonly cooldown?: Duration.Input | undefined }
    | undefined
}

/**
 * The pool's metrics; a pool with a `name` updates them with a `pool` attribute (read one
 * pool's with `Metric.withAttributes(metric, { pool: name })`), unnamed pools share the bare series:
 * `volley_blocking_queue_length` (gauge: tasks waiting for a thread, callers
 * held back by a full queue included), `volley_blocking_queue_wait_ms` and
 * `volley_blocking_run_ms` (histograms, per task; run time is measured in the
 * thread), `volley_blocking_utilization` (gauge: busy threads / maxWorkers),
 * `volley_blocking_crashes_total` (counter: threads that died unexpectedly or could not be created)
 * and `volley_blocking_terminating_threads` (gauge: threads the pool has terminated, a running task
 * interrupted or timed out, an import that expired or an idle thread ended, that have not exited
 * yet: above 0 for more than a moment, threads blocked in a native call, see the caveats).
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { NodeBlocking } from "@volley/node"
 *
 * const crashes = Metric.value(NodeBlocking.metrics.crashes)
 * ```
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = {
  queueLength: Metric.gauge("volley_blocking_queue_length", { description: "Tasks waiting for a thread" }),
  queueWait: Metric.histogram("volley_blocking_queue_wait_ms", {
    description: "Time from submit to a thread, ms",
    boundaries: Metric.exponentialBoundaries({ start: 0.05, factor: 4, count: 10 })
  }),
  runTime: Metric.histogram("volley_blocking_run_ms", {
    description: "Handler run time measured in the thread, ms",
    boundaries: Metric.exponentialBoundaries({ start: 0.05, factor: 4, count: 10 })
  }),
  utilization: Metric.gauge("volley_blocking_utilization", { description: "Busy threads / maxWorkers" }),
  crashes: Metric.counter("volley_blocking_crashes_total", {
    description: "Threads that died unexpectedly or could not be created"
  }),
  terminating: Metric.gauge("volley_blocking_terminating_threads", {
    description: "Threads the pool has terminated that have not exited yet (blocked in a native call)"
  })
}

/**
 * Builds the pool; scoped: closing the scope drains or cancels, then terminates every thread.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeBlocking } from "@volley/node"
 *
 * const program = Effect.scoped(Effect.gen(function* () {
 *   const executor = yield* NodeBlocking.make({ maxWorkers: 2 })
 *   return executor
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
// Written out: the inferred type named core's internal Executor module, which a consumer of the
// published declarations cannot import (its `A` became `any`, or did not compile).
export const make: (
  given?: Options
) => Effect.Effect<Blocking.BlockingExecutor["Service"], Validate.InvalidOptionsError, Scope.Scope> = Effect.fnUntraced(
  function* (given?: Options) {
    // `null` from JavaScript is no options, as `undefined` is; a string (say) is not options at all.
    const options: Options = yield* Validate.record("options", given ?? {})
    // Likewise a `null` name or resourceLimits: none.
    const name = options.name ?? undefined
    if (name !== undefined && typeof name !== "string") {
      return yield* new Validate.InvalidOptionsError({ option: "name", reason: `must be a string, got ${typeof name}` })
    }
    const resourceLimits = options.resourceLimits ?? undefined
    const maxWorkers = yield* Validate.positiveInt("maxWorkers", options.maxWorkers ?? availableParallelism())
    // Checked before any thread starts: minWorkers threads start at build, and up to maxWorkers
    // start when tasks queue, so `{ minWorkers: 1e6, maxWorkers: 1e6 }` would try a million.
    if (maxWorkers > maxWorkersCap) {
      return yield* new Validate.InvalidOptionsError({
        option: "maxWorkers",
        reason: `must be at most ${maxWorkersCap}, got ${maxWorkers}`
      })
    }
    const minWorkers = yield* Validate.positiveInt("minWorkers", options.minWorkers ?? 0, 0)
    if (minWorkers > maxWorkers) {
      return yield* new Validate.InvalidOptionsError({
        option: "minWorkers",
        reason: `must be <= maxWorkers (${maxWorkers}), got ${minWorkers}`
      })
    }
    const maxQueue = options.maxQueue === Number.POSITIVE_INFINITY ? maxQueueUnbounded : options.maxQueue
    const resolvedQueue = yield* Validate.positiveInt("maxQueue", maxQueue ?? maxQueueUnbounded)
    const idle = yield* Validate.duration("idleTimeout", options.idleTimeout ?? "30 seconds")
    const grace = yield* Validate.duration("gracePeriod", options.gracePeriod ?? "1 second")
    const timeout = yield* Validate.optional(options.timeout, (d) =>
      Validate.duration("timeout", d, { positive: true })
    )
    const queueTimeout = yield* Validate.optional(options.queueTimeout, (d) =>
      Validate.duration("queueTimeout", d, { positive: true })
    )
    const importTimeout = yield* Validate.duration("importTimeout", options.importTimeout ?? "60 seconds", {
      positive: true
    })
    const perWorker = yield* Validate.positiveInt("maxTasksPerWorker", options.maxTasksPerWorker ?? 64)
    // A thread reads cancellations of the tasks sent ahead to it from a ring of RING slots.
    if (perWorker > RING) {
      return yield* new Validate.InvalidOptionsError({
        option: "maxTasksPerWorker",
        reason: `must be at most ${RING}, got ${perWorker}`
      })
    }
    const queueFull = yield* oneOf("queueFull", options.queueFull ?? "wait", ["wait", "fail"] as const)
    const shutdown = yield* oneOf("shutdown", options.shutdown ?? "drain", ["drain", "cancel"] as const)
    const waitForWorkers = yield* Validate.oneOf("waitForWorkers", options.waitForWorkers ?? false, [true, false])
    // A `null` crashLoop is none too; one of another type would leave the breaker's defaults
    // without a word.
    const crashLoop = yield* Validate.record("crashLoop", options.crashLoop ?? {})
    const crashLoopDeaths = yield* Validate.positiveInt("crashLoop.deaths", crashLoop.deaths ?? 3)
    const crashLoopCooldown = yield* Validate.duration("crashLoop.cooldown", crashLoop.cooldown ?? "10 seconds")
    yield* checkLimits(resourceLimits)
    // An array, as documented: an object that is not iterable died in the loop below.
    const tasks = yield* Validate.array("tasks", options.tasks ?? [])
    const preload = yield* modulesOf(tasks as ReadonlyArray<Blocking.AnyTask>)
    const context = yield* Effect.context<never>()
    const named = <I, S>(metric: Metric.Metric<I, S>) =>
      name === undefined ? metric : Metric.withAttributes(metric, { pool: name })
    const update = <I>(metric: Metric.Metric<I, unknown>) => {
      const series = named(metric)
      return (value: I) => series.updateUnsafe(value, context)
    }
    const crashes = named(metrics.crashes)
    const clock = yield* Effect.clockWith(Effect.succeed)
    const engine = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new Engine({
            workerUrl: new URL(`./internal/pool/worker${extension}`, import.meta.url),
            minWorkers,
            maxWorkers,
            idleTimeoutMillis: Duration.toMillis(idle),
            maxQueue: resolvedQueue === maxQueueUnbounded ? Number.POSITIVE_INFINITY : resolvedQueue,
            queueFull,
            timeoutMillis: timeout === undefined ? undefined : Duration.toMillis(timeout),
            queueTimeoutMillis: queueTimeout === undefined ? undefined : Duration.toMillis(queueTimeout),
            gracePeriodMillis: Duration.toMillis(grace),
            maxTasksPerWorker: perWorker,
            resourceLimits,
            preload,
            importTimeoutMillis: Duration.toMillis(importTimeout),
            crashLoopDeaths,
            crashLoopCooldownMillis: Duration.toMillis(crashLoopCooldown),
            clock,
            observe: {
              queueLength: update(metrics.queueLength),
              queueWait: update(metrics.queueWait),
              runTime: update(metrics.runTime),
              utilization: update(metrics.utilization),
              crash: () => crashes.updateUnsafe(1, context),
              terminating: update(metrics.terminating)
            }
          })
      ),
      (engine) => Effect.promise(() => engine.close(shutdown))
    )
    if (waitForWorkers) yield* Effect.promise(() => engine.warmUp())
    const hasTimeouts = timeout !== undefined || queueTimeout !== undefined
    const submit = (request: Blocking.Request, callerClock: Clock.Clock, receiver: Blocking.Receiver) => {
      // Timeouts run on the caller's Clock (a TestClock in tests); without any, the pool's Clock
      // serves the grace period.
      const timed = hasTimeouts || request.timeoutMillis !== undefined || request.queueTimeoutMillis !== undefined
      const job = engine.submit(request, timed ? callerClock : clock, receiver)
      // Bound, not a closure: no scope kept alive per waiting call.
      return job === undefined ? undefined : engine.cancel.bind(engine, job)
    }
    return Blocking.BlockingExecutor.of({
      submit,
      execute: (request) =>
        Effect.clockWith((callerClock) =>
          Effect.callback<Blocking.Reply, Blocking.BlockingError>((resume) => {
            const cancel = submit(request, callerClock, {
              succeed: (reply) => resume(Exit.succeed(reply)),
              fail: (error) => resume(Exit.fail(error))
            })
            if (cancel !== undefined) return Effect.sync(cancel)
          })
        )
    })
  }
)

/**
 * The worker-thread executor as a layer; options are validated when the
 * layer is built and a bad one fails it with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 * import { NodeBlocking } from "@volley/node"
 *
 * // tasks.ts exports: Blocking.task({ module: import.meta.url, name: "hash", ... })
 * declare const hash: Blocking.Task<string, string>
 * const program = Blocking.run(hash, "password").pipe(
 *   Effect.provide(NodeBlocking.layer({ maxWorkers: 4, timeout: "10 seconds" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Blocking.BlockingExecutor, Validate.InvalidOptionsError> =>
  Layer.effect(Blocking.BlockingExecutor, make(options))

/**
 * Reads {@link Options} from `Config` (by default the environment), under `prefix`:
 * `VOLLEY_BLOCKING_MIN_WORKERS`, `_WAIT_FOR_WORKERS` (`true` | `false`), `_MAX_WORKERS`, `_MAX_QUEUE`, `_QUEUE_FULL` (`wait` | `fail`),
 * `_TIMEOUT`, `_QUEUE_TIMEOUT`, `_IMPORT_TIMEOUT`, `_IDLE_TIMEOUT`, `_GRACE_PERIOD`, `_MAX_TASKS_PER_WORKER`,
 * `_SHUTDOWN` (`drain` | `cancel`), `_CRASH_LOOP_DEATHS`, `_CRASH_LOOP_COOLDOWN`; durations such as
 * `"5 seconds"`. Unset variables keep the
 * defaults; a value that does not parse fails the layer with a `ConfigError`.
 *
 * @example
 * ```ts
 * import { NodeBlocking } from "@volley/node"
 *
 * // VOLLEY_BLOCKING_MAX_WORKERS=4 VOLLEY_BLOCKING_SHUTDOWN=cancel node app.ts
 * const executor = NodeBlocking.layerConfig()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  prefix = "VOLLEY_BLOCKING"
): Layer.Layer<Blocking.BlockingExecutor, Validate.InvalidOptionsError | Config.ConfigError> =>
  Layer.unwrap(
    Effect.map(
      Config.all({
        minWorkers: Validate.optionalConfig(Config.Int("MIN_WORKERS")),
        waitForWorkers: Validate.optionalConfig(Config.Boolean("WAIT_FOR_WORKERS")),
        maxWorkers: Validate.optionalConfig(Config.Int("MAX_WORKERS")),
        maxQueue: Validate.optionalConfig(Config.Int("MAX_QUEUE")),
        queueFull: Validate.optionalConfig(Config.Literals(["wait", "fail"], "QUEUE_FULL")),
        timeout: Validate.optionalConfig(Config.Duration("TIMEOUT")),
        queueTimeout: Validate.optionalConfig(Config.Duration("QUEUE_TIMEOUT")),
        importTimeout: Validate.optionalConfig(Config.Duration("IMPORT_TIMEOUT")),
        idleTimeout: Validate.optionalConfig(Config.Duration("IDLE_TIMEOUT")),
        gracePeriod: Validate.optionalConfig(Config.Duration("GRACE_PERIOD")),
        maxTasksPerWorker: Validate.optionalConfig(Config.Int("MAX_TASKS_PER_WORKER")),
        shutdown: Validate.optionalConfig(Config.Literals(["drain", "cancel"], "SHUTDOWN")),
        crashLoopDeaths: Validate.optionalConfig(Config.Int("CRASH_LOOP_DEATHS")),
        crashLoopCooldown: Validate.optionalConfig(Config.Duration("CRASH_LOOP_COOLDOWN"))
      }).pipe(Config.nested(prefix)),
      ({ crashLoopDeaths: deaths, crashLoopCooldown: cooldown, ...options }) =>
        Layer.effect(
          Blocking.BlockingExecutor,
          Validate.configKeys(prefix, configKeys)(make({ ...options, crashLoop: { deaths, cooldown } }))
        )
    )
  )

// The keys `layerConfig` reads each option from, named in its `InvalidOptionsError`s.
const configKeys = {
  minWorkers: "MIN_WORKERS",
  waitForWorkers: "WAIT_FOR_WORKERS",
  maxWorkers: "MAX_WORKERS",
  maxQueue: "MAX_QUEUE",
  queueFull: "QUEUE_FULL",
  timeout: "TIMEOUT",
  queueTimeout: "QUEUE_TIMEOUT",
  importTimeout: "IMPORT_TIMEOUT",
  idleTimeout: "IDLE_TIMEOUT",
  gracePeriod: "GRACE_PERIOD",
  maxTasksPerWorker: "MAX_TASKS_PER_WORKER",
  shutdown: "SHUTDOWN",
  "crashLoop.deaths": "CRASH_LOOP_DEATHS",
  "crashLoop.cooldown": "CRASH_LOOP_COOLDOWN"
}

// Below these a thread does not just die: the whole process aborts (measured on Node 24: a
// 2 MB old generation fails in V8's deserializer, a 0.1 MB stack segfaults).
const limitFloors: { readonly [K in keyof ResourceLimits]-?: number } = {
  maxOldGenerationSizeMb: 4,
  maxYoungGenerationSizeMb: 0,
  codeRangeSizeMb: 0,
  stackSizeMb: 0.5
}

// Above these, too: a code range the address space cannot hold aborts the process (V8's "Failed to
// reserve virtual memory for CodeRange", measured from about 1e8 MB on Node 24, x64), and a stack
// of about 2e13 MB and more overflows Node's byte count and segfaults it. Up to these, a stack the
// OS cannot map only fails the thread's creation (EAGAIN), which the pool handles. The heap limits
// are clamped by V8 and have none.
const limitCeilings: { readonly [K in keyof ResourceLimits]-?: number } = {
  maxOldGenerationSizeMb: Number.POSITIVE_INFINITY,
  maxYoungGenerationSizeMb: Number.POSITIVE_INFINITY,
  codeRangeSizeMb: 1_048_576,
  stackSizeMb: 1_048_576
}

const checkLimits = (limits: ResourceLimits | undefined): Effect.Effect<void, Validate.InvalidOptionsError> => {
  if (limits !== undefined && (typeof limits !== "object" || limits === null || Array.isArray(limits))) {
    return Effect.fail(
      new Validate.InvalidOptionsError({ option: "resourceLimits", reason: `must be an object, got ${String(limits)}` })
    )
  }
  for (const key of Object.keys(limitFloors) as Array<keyof ResourceLimits>) {
    const value = limits?.[key]
    if (value === undefined) continue
    const floor = limitFloors[key]
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value < floor) {
      const bound = floor > 0 ? `>= ${floor}` : "> 0"
      return Effect.fail(
        new Validate.InvalidOptionsError({
          option: `resourceLimits.${key}`,
          reason: `must be a number ${bound} (smaller values crash the whole process), got ${String(value)}`
        })
      )
    }
    const ceiling = limitCeilings[key]
    if (value > ceiling) {
      return Effect.fail(
        new Validate.InvalidOptionsError({
          option: `resourceLimits.${key}`,
          reason: `must be at most ${ceiling} (larger values can crash the whole process), got ${String(value)}`
        })
      )
    }
  }
  return Effect.void
}

const modulesOf = (
  tasks: ReadonlyArray<Blocking.AnyTask>
): Effect.Effect<Array<string>, Validate.InvalidOptionsError> => {
  const modules = new Set<string>()
  for (const task of tasks) {
    if (!Blocking.isTask(task) || task.module === undefined) {
      return Effect.fail(
        new Validate.InvalidOptionsError({
          option: "tasks",
          reason: `must be tasks defined with a module URL, got ${Blocking.isTask(task) ? `"${task.name}" without one` : String(task)}`
        })
      )
    }
    modules.add(task.module)
  }
  return Effect.succeed([...modules])
}

const oneOf = <const A extends string>(
  option: string,
  value: string,
  allowed: ReadonlyArray<A>
): Effect.Effect<A, Validate.InvalidOptionsError> =>
  allowed.includes(value as A)
    ? Effect.succeed(value as A)
    : Effect.fail(
        new Validate.InvalidOptionsError({
          option,
          reason: `must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(value)}`
        })
      )

// The worker entry sits next to this file: `.ts` when running from sources, `.js` from dist.
const extension = import.meta.url.endsWith(".ts") ? ".ts" : ".js"
const maxQueueUnbounded = Number.MAX_SAFE_INTEGER
/** Most threads one pool may have (documented on `Options.maxWorkers`). */
const maxWorkersCap = 1024
