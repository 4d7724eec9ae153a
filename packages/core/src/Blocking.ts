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
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Tracer from "effect/Tracer"
import { Call } from "./internal/blocking/call.ts"
import * as Codec from "./internal/blocking/codec.ts"
import * as Inline from "./internal/blocking/inline.ts"
import * as Validate from "./internal/options.ts"

/**
 * Marks a value as a {@link Task}; a plain string so tasks are recognised across copies of this package.
 *
 * @since 0.1.0
 * @category type ids
 */
export const TypeId = "~@volley/core/Blocking/Task" as const

/**
 * What a handler receives besides its payload.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskContext {
  /**
   * Aborted when the caller is interrupted or the task times out; a worker that ignores it is
   * terminated after a grace period. A synchronous handler cannot see it change while it runs:
   * check it in an `async` handler, between awaits.
   */
  readonly signal: AbortSignal
  /** Trace and span id of the caller's `Blocking.run` span, to continue the trace inside the handler. */
  readonly traceId: string | undefined
  readonly spanId: string | undefined
}

/**
 * A unit of blocking work: a name, Schemas for what goes in and out, and a
 * handler. Build one with {@link task}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Task<Payload, Success, Failure = never> {
  readonly [TypeId]: typeof TypeId
  readonly name: string
  /** URL of the ES module that exports this task; worker executors import it. */
  readonly module: string | undefined
  readonly payload: Schema.Codec<Payload, unknown>
  readonly success: Schema.Codec<Success, unknown>
  readonly failure: Schema.Codec<Failure, unknown>
  /** Default run timeout of this task, in milliseconds. */
  readonly timeoutMillis: number | undefined
  readonly transfer: {
    readonly payload?: ((payload: Payload) => ReadonlyArray<Transferable>) | undefined
    readonly success?: ((success: Success) => ReadonlyArray<Transferable>) | undefined
  }
  readonly handler: (payload: Payload, context: TaskContext) => Success | PromiseLike<Success>
  /**
   * For executors: decodes an encoded payload, calls the handler, encodes its result. A method
   * on the task, so a thread that runs tasks needs only the task module, not this package.
   */
  readonly invoke: (payload: unknown, context: TaskContext, transferOut?: Array<Transferable>) => Reply | Promise<Reply>
}

/**
 * Any task, whatever its types.
 *
 * @since 0.1.0
 * @category models
 */
// biome-ignore lint/suspicious/noExplicitAny: a task's type parameters are invariant
export type AnyTask = Task<any, any, any>

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
 * The payload did not match its Schema, or cannot be sent (a function, a symbol).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPayloadError extends Schema.TaggedError<InvalidPayloadError>()("InvalidPayloadError", {
  task: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Task ${this.task}: invalid payload: ${this.reason}`
  }
}

/**
 * The handler's result (or thrown failure) did not match its Schema, or cannot be sent back.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidResultError extends Schema.TaggedError<InvalidResultError>()("InvalidResultError", {
  task: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Task ${this.task}: invalid result: ${this.reason}`
  }
}

/**
 * The handler threw something that is not its typed failure; keeps the remote name, message and stack.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerError extends Schema.TaggedError<HandlerError>()("HandlerError", {
  task: Schema.String,
  errorName: Schema.String,
  errorMessage: Schema.String,
  remoteStack: Schema.UndefinedOr(Schema.String)
}) {
  override get message(): string {
    return `Task ${this.task} threw ${this.errorName}: ${this.errorMessage}`
  }
}

/**
 * The task waited in the queue (`phase: "queued"`) or ran (`phase: "running"`) longer than allowed.
 *
 * @since 0.1.0
 * @category errors
 */
export class TaskTimeoutError extends Schema.TaggedError<TaskTimeoutError>()("TaskTimeoutError", {
  task: Schema.String,
  phase: Schema.Literals(["queued", "running"]),
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `Task ${this.task} timed out after ${this.timeoutMillis} ms (${this.phase})`
  }
}

/**
 * The worker running the task died: it exited (`process.exit`, an uncaught
 * exception outside the handler) or ran out of memory. With `reason:
 * "crash-loop"` the task did not run: the executor's crash-loop breaker is
 * open (the task's module killed several workers in a row, or workers die at
 * start-up), and `detail` says why and for how long.
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerDiedError extends Schema.TaggedError<WorkerDiedError>()("WorkerDiedError", {
  task: Schema.String,
  reason: Schema.Literals(["exit", "out-of-memory", "crash-loop"]),
  exitCode: Schema.UndefinedOr(Schema.Number),
  detail: Schema.String
}) {
  override get message(): string {
    return `Task ${this.task}: worker died (${this.reason}${this.exitCode === undefined ? "" : `, exit code ${this.exitCode}`}): ${this.detail}`
  }
}

/**
 * The task's module could not be imported, or does not export a task with that name.
 *
 * @since 0.1.0
 * @category errors
 */
export class TaskNotFoundError extends Schema.TaggedError<TaskNotFoundError>()("TaskNotFoundError", {
  task: Schema.String,
  module: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Task ${this.task} not found in ${this.module}: ${this.reason}`
  }
}

/**
 * The executor's queue was full and it is configured to fail fast.
 *
 * @since 0.1.0
 * @category errors
 */
export class QueueFullError extends Schema.TaggedError<QueueFullError>()("QueueFullError", {
  task: Schema.String,
  capacity: Schema.Number
}) {
  override get message(): string {
    return `Task ${this.task}: queue full (capacity ${this.capacity})`
  }
}

/**
 * The executor was shut down before the task could finish.
 *
 * @since 0.1.0
 * @category errors
 */
export class ExecutorShutDownError extends Schema.TaggedError<ExecutorShutDownError>()("ExecutorShutDownError", {
  task: Schema.String
}) {
  override get message(): string {
    return `Task ${this.task}: executor shut down`
  }
}

/**
 * Every error an executor adds to a task's own failure type.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Blocking } from "@volley/core"
 *
 * const parse = Blocking.task({ name: "parse", payload: Schema.String, success: Schema.Unknown, handler: (s) => JSON.parse(s) })
 * const safe = Blocking.run(parse, "{").pipe(
 *   Effect.catchTags({
 *     HandlerError: (e) => Effect.succeed(`bad JSON: ${e.errorMessage}`),
 *     TaskTimeoutError: () => Effect.succeed("too slow")
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export type BlockingError =
  | InvalidPayloadError
  | InvalidResultError
  | HandlerError
  | TaskTimeoutError
  | WorkerDiedError
  | TaskNotFoundError
  | QueueFullError
  | ExecutorShutDownError

/**
 * Per-call options of {@link run}.
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
 * What an executor receives: the payload already encoded and validated.
 *
 * @since 0.1.0
 * @category executor implementation
 */
export interface Request {
  readonly task: AnyTask
  readonly payload: unknown
  readonly transfer: ReadonlyArray<Transferable>
  readonly timeoutMillis: number | undefined
  readonly queueTimeoutMillis: number | undefined
  /**
   * The call's span (`Blocking.run <task>`), made on first read and backdated to the call's
   * start: an executor that queues calls reads it when the task starts, so a waiting call does
   * not hold one. `run` ends it.
   */
  readonly span: Tracer.Span
}

/**
 * What a handler produced, as plain data; {@link run} decodes it.
 *
 * @since 0.1.0
 * @category executor implementation
 */
export type Reply = Codec.Reply

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
export class BlockingExecutor extends Context.Service<
  BlockingExecutor,
  {
    readonly execute: (request: Request) => Effect.Effect<Reply, BlockingError>
    /**
     * Optional fast path that {@link run} prefers to `execute`, for executors that queue many
     * calls: starts the request and later calls `receiver` once (synchronously or not) with its
     * reply or error; returns what to do if the caller is interrupted first, if anything. A call
     * waiting in the queue then costs its fiber one suspension, not the frames of an Effect.
     * `clock` is the caller's (timeouts run on it; a TestClock in tests).
     */
    readonly submit?:
      | ((request: Request, clock: Clock.Clock, receiver: Receiver) => (() => void) | undefined)
      | undefined
  }
>()("@volley/core/Blocking/BlockingExecutor") {}

/**
 * Where an executor's {@link BlockingExecutor} `submit` delivers a call's outcome, once.
 *
 * @since 0.1.0
 * @category executor implementation
 */
export interface Receiver {
  /** Called as a method (`receiver.succeed(reply)`), once, for the reply; or `fail` for an error. */
  succeed(reply: Reply): void
  fail(error: BlockingError): void
}

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
  options === undefined
    ? runWith(task, payload, task.timeoutMillis, undefined)
    : Effect.flatMap(
        Effect.all([
          Validate.optional(options.timeout, (d) => Validate.duration("timeout", d, { positive: true })),
          Validate.optional(options.queueTimeout, (d) => Validate.duration("queueTimeout", d, { positive: true }))
        ]),
        ([timeout, queueTimeout]) =>
          runWith(
            task,
            payload,
            timeout === undefined ? task.timeoutMillis : Duration.toMillis(timeout),
            queueTimeout === undefined ? undefined : Duration.toMillis(queueTimeout)
          )
      )

const runWith = <Payload, Success, Failure>(
  task: Task<Payload, Success, Failure>,
  payload: Payload,
  timeoutMillis: number | undefined,
  queueTimeoutMillis: number | undefined
): Effect.Effect<Success, Failure | BlockingError, BlockingExecutor> =>
  Effect.flatMap(BlockingExecutor, (executor) => {
    const codecs = Codec.codecsOf(task)
    const encoded = codecs.encodePayload(payload)
    if (encoded._tag === "Failure") {
      return Effect.fail(new InvalidPayloadError({ task: task.name, reason: Codec.issue(encoded) }))
    }
    let transfer: ReadonlyArray<Transferable>
    try {
      transfer = task.transfer.payload?.(payload) ?? noTransfer
    } catch (thrown) {
      const reason = `transfer.payload threw: ${Codec.describe(thrown)}`
      return Effect.fail(new InvalidPayloadError({ task: task.name, reason }))
    }
    return Effect.withFiber((fiber) =>
      start(executor, task, encoded.value, transfer, timeoutMillis, queueTimeoutMillis, fiber)
    )
  })

const noTransfer: ReadonlyArray<Transferable> = []

// Top level, not nested in runWith: a closure made here captures only its own arguments, while
// one nested in runWith would keep runWith's whole scope alive for as long as the call waits.
const start = <Payload, Success, Failure>(
  executor: BlockingExecutor["Service"],
  task: Task<Payload, Success, Failure>,
  payload: unknown,
  transfer: ReadonlyArray<Transferable>,
  timeoutMillis: number | undefined,
  queueTimeoutMillis: number | undefined,
  fiber: Fiber.Fiber<unknown, unknown>
): Effect.Effect<Success, Failure | BlockingError> => {
  const codecs = Codec.codecsOf(task)
  // Tracing off: Effect's own (no-op) span. On: a Call, whose span is made only when the
  // executor reads it, so a call waiting for a thread stays small (see internal/blocking/call.ts).
  if (!fiber.cache.tracerEnabled) {
    return Effect.useSpan(codecs.spanName, codecs.spanOptions, (span) =>
      Effect.flatMap(executor.execute({ task, payload, transfer, timeoutMillis, queueTimeoutMillis, span }), (reply) =>
        decodeReply(task, reply)
      )
    )
  }
  const call = new Call(
    task,
    payload,
    transfer,
    timeoutMillis,
    queueTimeoutMillis,
    fiber,
    codecs.spanName,
    codecs.spanOptions.attributes
  )
  if (executor.submit !== undefined) {
    // One suspension: the reply is decoded and the span ended in the receiver, the span ended
    // and the executor told in the interrupt hook. No onExit or flatMap frames.
    call.submit = executor.submit
    return Effect.callback<Success, Failure | BlockingError>(call.register.bind(call))
  }
  return Effect.onExit(
    Effect.flatMap(executor.execute(call), (reply) => decodeReply(task, reply)),
    (exit) => Effect.sync(() => call.end(exit))
  )
}

/**
 * Runs the handler next to where the executor placed it: decodes the payload,
 * calls the handler, encodes its result or typed failure. Returns a plain
 * reply synchronously for synchronous handlers. `transferOut` collects the
 * buffers the task asked to move back.
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
