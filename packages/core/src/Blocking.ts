/**
 * Blocking and CPU-heavy work as Effects.
 *
 * A program says *what* to run with {@link task} and {@link run}; a
 * {@link BlockingExecutor} layer decides *where*: on worker threads in
 * production (`NodeBlocking.layer` from `@volley/node`), or on the calling
 * thread in tests and on platforms without threads ({@link layerInline}).
 * Payloads, results and typed failures cross the boundary as Schema-encoded,
 * structured-clone-able data, so both executors behave the same way.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Codec from "./internal/blocking/codec.ts"
import * as Inline from "./internal/blocking/inline.ts"
import type { Executor, Reply, Task } from "./internal/blocking/model.ts"
import { type AnyTask, type BlockingError, type TaskContext, TypeId } from "./internal/blocking/model.ts"
import * as Run from "./internal/blocking/run.ts"
import * as Validate from "./internal/options.ts"

export {
  type AnyTask,
  type BlockingError,
  ExecutorShutDownError,
  HandlerError,
  InvalidPayloadError,
  InvalidResultError,
  isBlockingError,
  QueueFullError,
  type Receiver,
  type Reply,
  type Request,
  type Task,
  type TaskContext,
  TaskNotFoundError,
  TaskTimeoutError,
  TypeId,
  WorkerDiedError
} from "./internal/blocking/model.ts"

/**
 * Defines a task. Export it from an ES module and pass `import.meta.url` as
 * `module` so a worker executor can find it; a handler signals a typed
 * failure by throwing a value of the `failure` Schema.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * class TooLong extends Schema.TaggedError<TooLong>()("TooLong", { length: Schema.Number }) {}
 *
 * export const shout = Blocking.task({
 *   module: import.meta.url,
 *   name: "shout",
 *   payload: Schema.String,
 *   success: Schema.String,
 *   failure: TooLong,
 *   handler: (text) => {
 *     if (text.length > 100) throw new TooLong({ length: text.length })
 *     return text.toUpperCase()
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const task = <Payload, Success, Failure = never>(options: {
  /** Unique among the module's exported tasks: a worker runs neither of two that share one (TaskNotFoundError). */
  readonly name: string
  readonly module?: string | URL | undefined
  readonly payload: Schema.Codec<Payload, unknown>
  readonly success: Schema.Codec<Success, unknown>
  readonly failure?: Schema.Codec<Failure, unknown> | undefined
  /** Run timeout for this task (overridden per call by {@link RunOptions.timeout}). */
  readonly timeout?: Duration.Input | undefined
  /** Buffers to move instead of copy; they are detached on the sending side. */
  readonly transfer?: Task<Payload, Success, Failure>["transfer"] | undefined
  readonly handler: (
    payload: NoInfer<Payload>,
    context: TaskContext
  ) => NoInfer<Success> | PromiseLike<NoInfer<Success>>
}): Task<Payload, Success, Failure> => {
  const self: Task<Payload, Success, Failure> = {
    [TypeId]: TypeId,
    name: options.name,
    module: options.module === undefined ? undefined : String(options.module),
    payload: options.payload,
    success: options.success,
    failure: options.failure ?? (Schema.Never as unknown as Schema.Codec<Failure, unknown>),
    // A bad timeout here is a bug in the definition: it throws the InvalidOptionsError at once.
    timeoutMillis:
      options.timeout === undefined
        ? undefined
        : Duration.toMillis(Effect.runSync(Validate.duration("timeout", options.timeout, { positive: true }))),
    transfer: options.transfer ?? {},
    handler: options.handler,
    invoke: (payload, context, transferOut) => Codec.invoke(Codec.codecsOf(self), self, payload, context, transferOut)
  }
  return self
}

/**
 * Tells whether a value is a {@link Task}; worker executors use it to find the tasks a module exports.
 *
 * @example
 * ```ts
 * import { Blocking } from "@volley/core"
 *
 * Blocking.isTask({ name: "x" }) // false
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isTask = (u: unknown): u is AnyTask =>
  typeof u === "object" && u !== null && (u as { [TypeId]?: unknown })[TypeId] === TypeId

/**
 * Per-call options of {@link run}.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const echo = Blocking.task({ name: "echo", payload: Schema.String, success: Schema.String, handler: (s) => s })
 * const options: Blocking.RunOptions = { timeout: "2 seconds", queueTimeout: "500 millis" }
 * const program = Blocking.run(echo, "hi", options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  /**
   * Longest run time, counted from when the task starts running.
   * @default the task's `timeout`, else the executor's default
   */
  readonly timeout?: Duration.Input | undefined
  /**
   * Longest time to wait in the executor's queue before starting.
   * @default the executor's default (unbounded)
   */
  readonly queueTimeout?: Duration.Input | undefined
}

/**
 * Runs tasks somewhere: on the calling thread or on worker threads.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const program = Effect.gen(function* () {
 *   const executor = yield* Blocking.BlockingExecutor
 *   return executor
 * }).pipe(Effect.provide(Blocking.layerInline))
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class BlockingExecutor extends Context.Service<BlockingExecutor, Executor>()(
  "@volley/core/Blocking/BlockingExecutor"
) {}

/**
 * Runs a task on the current {@link BlockingExecutor}: validates and encodes
 * the payload, runs the handler where the executor puts it, and decodes the
 * result, inside a span named `Blocking.run <task>`. Interrupting the fiber
 * cancels the task. Works as the function of `Stream.mapEffect(f, { concurrency })`.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const square = Blocking.task({
 *   name: "square",
 *   payload: Schema.Number,
 *   success: Schema.Number,
 *   handler: (n) => n * n
 * })
 *
 * const program = Blocking.run(square, 7).pipe(Effect.provide(Blocking.layerInline)) // 49
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run = <Payload, Success, Failure>(
  task: Task<Payload, Success, Failure>,
  payload: Payload,
  options?: RunOptions
): Effect.Effect<Success, Failure | BlockingError | Validate.InvalidOptionsError, BlockingExecutor> =>
  // `null` from JavaScript is no options, as `undefined` is.
  options == null
    ? Effect.flatMap(BlockingExecutor, (executor) => Run.one(executor, task, payload, task.timeoutMillis, undefined))
    : Effect.flatMap(
        Effect.all([
          // Options that are not an object (a string, from JavaScript) were dropped without a word.
          Validate.record("options", options),
          Validate.optional(options.timeout, (d) => Validate.duration("timeout", d, { positive: true })),
          Validate.optional(options.queueTimeout, (d) => Validate.duration("queueTimeout", d, { positive: true }))
        ]),
        ([, timeout, queueTimeout]) =>
          Effect.flatMap(BlockingExecutor, (executor) =>
            Run.one(
              executor,
              task,
              payload,
              timeout === undefined ? task.timeoutMillis : Duration.toMillis(timeout),
              queueTimeout === undefined ? undefined : Duration.toMillis(queueTimeout)
            )
          )
      )

/**
 * Options of {@link runAll} and {@link runAllSettled}: those of {@link run}, for every task of the
 * batch, and how many tasks the batch keeps submitted at once.
 *
 * @example
 * ```ts
 * import { Blocking } from "@volley/core"
 *
 * const options: Blocking.BatchOptions = { concurrency: 1024, timeout: "30 seconds" }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchOptions extends RunOptions {
  /**
   * Tasks submitted to the executor and not yet answered, at most; the executor's threads bound
   * what runs, so a window only needs to keep them busy. The rest wait in the batch as plain
   * payloads: on a pool of 2 threads, 100,000 no-op tasks ran at 190-330k tasks/s with the
   * main thread's event-loop delay p99 at 3-5 ms in a window of 1,024, and at half that speed,
   * p99 10-18 ms, with a window of 4,096 (the live records of submitted tasks make the young
   * generation's collections long). `queueTimeout` counts from when the batch submits a task.
   * An integer >= 1 or `"unbounded"`, else `InvalidOptionsError`.
   * @default 1024
   */
  readonly concurrency?: number | "unbounded" | undefined
}

/**
 * Runs `task` on every payload, as `Effect.forEach(payloads, (p) => run(task, p))` with
 * `{ concurrency: "unbounded" }` would, but as one fiber that keeps a window of tasks submitted
 * (1,024 by default): a submitted task costs a small record instead of a fiber, and the others
 * are plain payloads until their turn, so 100,000 tasks at once neither block the event loop
 * while they are forked nor fill the heap while they wait. Succeeds with the results in
 * input order; fails with the first failure (a typed failure of the task or a
 * {@link BlockingError}, an invalid payload included) and cancels the tasks still running, as
 * interrupting the batch does. Each task keeps its own `Blocking.run <task>` span, under the
 * batch's `Blocking.runAll <task>` span. `payloads` that are a string (iterable, of its
 * characters) or not iterable fail with `InvalidOptionsError` before any task runs.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const square = Blocking.task({ name: "square", payload: Schema.Number, success: Schema.Number, handler: (n) => n * n })
 *
 * const squares = Blocking.runAll(square, [1, 2, 3]).pipe(Effect.provide(Blocking.layerInline)) // [1, 4, 9]
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const runAll = <Payload, Success, Failure>(
  task: Task<Payload, Success, Failure>,
  payloads: Iterable<Payload>,
  options?: BatchOptions
): Effect.Effect<Array<Success>, Failure | BlockingError | Validate.InvalidOptionsError, BlockingExecutor> =>
  runBatch(task, payloads, options, (executor, all, plan) => Run.all(executor, task, all, plan))

/**
 * {@link runAll} that keeps going past failures: one `Result` per payload, in input order, a
 * failed task's typed failure or {@link BlockingError} in its `Result`. Fails only on invalid
 * options.
 *
 * @example
 * ```ts
 * import { Effect, Result, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const root = Blocking.task({
 *   name: "root",
 *   payload: Schema.Number,
 *   success: Schema.Number,
 *   failure: Schema.String,
 *   handler: (n) => {
 *     if (n < 0) throw "negative"
 *     return Math.sqrt(n)
 *   }
 * })
 *
 * const program = Blocking.runAllSettled(root, [4, -1, 9]).pipe(
 *   Effect.map((results) => results.filter(Result.isSuccess).length), // 2
 *   Effect.provide(Blocking.layerInline)
 * )
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const runAllSettled = <Payload, Success, Failure>(
  task: Task<Payload, Success, Failure>,
  payloads: Iterable<Payload>,
  options?: BatchOptions
): Effect.Effect<
  Array<Result.Result<Success, Failure | BlockingError>>,
  Validate.InvalidOptionsError,
  BlockingExecutor
> => runBatch(task, payloads, options, (executor, all, plan) => Run.allSettled(executor, task, all, plan))

/** Tasks a batch keeps submitted by default (see `BatchOptions.concurrency`). */
const DEFAULT_WINDOW = 1024

// The batch's options checked and resolved, the payloads taken once, the executor found; the
// span covers the whole batch.
const runBatch = <Payload, A, E>(
  task: AnyTask,
  payloads: Iterable<Payload>,
  options: BatchOptions | undefined,
  run: (executor: Executor, payloads: ReadonlyArray<Payload>, plan: Run.BatchPlan) => Effect.Effect<A, E>
): Effect.Effect<A, E | Validate.InvalidOptionsError, BlockingExecutor> =>
  Effect.flatMap(
    Effect.all([
      Run.checkPayloads(payloads),
      // `null` is no options, as `undefined` is; a string (say) was dropped without a word.
      options == null ? Effect.void : Validate.record("options", options),
      options?.concurrency === "unbounded"
        ? Effect.succeed(Number.POSITIVE_INFINITY)
        : Validate.positiveInt("concurrency", options?.concurrency ?? DEFAULT_WINDOW),
      Validate.optional(options?.timeout, (d) => Validate.duration("timeout", d, { positive: true })),
      Validate.optional(options?.queueTimeout, (d) => Validate.duration("queueTimeout", d, { positive: true }))
    ]),
    ([, , window, timeout, queueTimeout]) => {
      const all = Array.from(payloads)
      const plan: Run.BatchPlan = {
        timeoutMillis: timeout === undefined ? task.timeoutMillis : Duration.toMillis(timeout),
        queueTimeoutMillis: queueTimeout === undefined ? undefined : Duration.toMillis(queueTimeout),
        window
      }
      return Effect.flatMap(BlockingExecutor, (executor) => run(executor, all, plan)).pipe(
        Effect.withSpan(`Blocking.runAll ${task.name}`, {
          attributes: { "volley.blocking.task": task.name, "volley.blocking.tasks": all.length }
        })
      )
    }
  )

/**
 * Runs the handler next to where the executor placed it: decodes the payload,
 * calls the handler, encodes its result or typed failure. Returns a plain
 * reply synchronously for synchronous handlers. `transferOut` collects the
 * buffers the task asked to move back.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const square = Blocking.task({ name: "square", payload: Schema.Number, success: Schema.Number, handler: (n) => n * n })
 *
 * // What a worker does with a request: the payload arrives encoded, the reply goes back encoded.
 * const context = { signal: new AbortController().signal, traceId: undefined, spanId: undefined }
 * const reply = await Blocking.invoke(square, 7, context) // { _tag: "Success", value: 49 }
 * ```
 *
 * @since 0.1.0
 * @category executor implementation
 */
export const invoke = (
  task: AnyTask,
  payload: unknown,
  context: TaskContext,
  transferOut?: Array<Transferable>
): Reply | Promise<Reply> => task.invoke(payload, context, transferOut)

/**
 * Turns a reply into the task's result, its typed failure or a {@link BlockingError}.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const square = Blocking.task({ name: "square", payload: Schema.Number, success: Schema.Number, handler: (n) => n * n })
 *
 * const result = Blocking.decodeReply(square, { _tag: "Success", value: 49 }) // succeeds with 49
 * const fortyNine = Effect.runSync(result)
 * ```
 *
 * @since 0.1.0
 * @category executor implementation
 */
export const decodeReply = <Payload, Success, Failure>(
  task: Task<Payload, Success, Failure>,
  reply: Reply
): Effect.Effect<Success, Failure | BlockingError> => Codec.decodeReply(task, reply)

/**
 * Runs every task on the calling thread, right away. For tests and for
 * platforms without threads: payloads and results are still encoded and
 * structured-cloned, so a task that works here works on worker threads. A
 * synchronous handler blocks the caller and cannot be interrupted or timed out.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const double = Blocking.task({ name: "double", payload: Schema.Number, success: Schema.Number, handler: (n) => 2 * n })
 * const four = Blocking.run(double, 2).pipe(Effect.provide(Blocking.layerInline))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerInline: Layer.Layer<BlockingExecutor> = Layer.succeed(
  BlockingExecutor,
  BlockingExecutor.of({ execute: Inline.execute })
)
