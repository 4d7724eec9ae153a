// The models and errors of Blocking: declared here and re-exported by Blocking.ts, so the
// executors' shared code (call.ts, codec.ts, inline.ts) never imports the public module, and a
// worker thread that loads a task module loads no more than this and the codecs.
import type * as Clock from "effect/Clock"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as Tracer from "effect/Tracer"

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
 * The handler threw something that is not its typed failure; keeps the remote name, message and
 * stack, the stack followed by what the error wraps ("Caused by: ...", its `cause` chain and an
 * AggregateError's `errors`), which V8's stack leaves out.
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

const blockingTags: ReadonlySet<string> = new Set<BlockingError["_tag"]>([
  "InvalidPayloadError",
  "InvalidResultError",
  "HandlerError",
  "TaskTimeoutError",
  "WorkerDiedError",
  "TaskNotFoundError",
  "QueueFullError",
  "ExecutorShutDownError"
])

/**
 * Whether `u` is one of the executors' own errors ({@link BlockingError}), not a task's typed
 * failure: for code that runs tasks it did not write (a cluster runner, a supervisor) and must
 * tell the two apart.
 *
 * @example
 * ```ts
 * import { Blocking } from "@volley/core"
 *
 * const retryable = (error: unknown) => Blocking.isBlockingError(error) && error._tag === "WorkerDiedError" // true for a crash
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isBlockingError = (u: unknown): u is BlockingError =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" && blockingTags.has(u._tag)

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
export type Reply =
  | { readonly _tag: "Success"; readonly value: unknown }
  | { readonly _tag: "Failure"; readonly error: unknown }
  | {
      readonly _tag: "Threw"
      readonly name: string
      readonly message: string
      readonly stack: string | undefined
    }
  | { readonly _tag: "InvalidPayload"; readonly reason: string }
  | { readonly _tag: "InvalidResult"; readonly reason: string }

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

/** The shape of a `BlockingExecutor` service (see Blocking.ts). */
export interface Executor {
  readonly execute: (request: Request) => Effect.Effect<Reply, BlockingError>
  /**
   * Optional fast path that {@link run} prefers to `execute`, for executors that queue many
   * calls: starts the request and later calls `receiver` once (synchronously or not) with its
   * reply or error; returns what to do if the caller is interrupted first, if anything. A call
   * waiting in the queue then costs its fiber one suspension, not the frames of an Effect.
   * `clock` is the caller's (timeouts run on it; a TestClock in tests).
   */
  readonly submit?: ((request: Request, clock: Clock.Clock, receiver: Receiver) => (() => void) | undefined) | undefined
}
