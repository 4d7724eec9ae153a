// Running tasks on an executor, once its options are resolved (Blocking.ts validates them and
// finds the executor): one task (`one`), or a batch (`all`, `allSettled`) through the executor's
// `submit` fast path when it has one (./batch.ts), else as a fiber per task.
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Result from "effect/Result"
import * as Validate from "../options.ts"
import * as Batch from "./batch.ts"
import { Call } from "./call.ts"
import * as Codec from "./codec.ts"
import { type BlockingError, type Executor, InvalidPayloadError, type Task } from "./model.ts"

/** A batch's resolved options. */
export interface BatchPlan {
  readonly timeoutMillis: number | undefined
  readonly queueTimeoutMillis: number | undefined
  /** Tasks submitted and not yet answered, at most (`Infinity`: all at once). */
  readonly window: number
}

/** Runs `task` on `payload`: encodes it, runs it where `executor` puts it, decodes the reply. */
export const one = <Payload, Success, Failure>(
  executor: Executor,
  task: Task<Payload, Success, Failure>,
  payload: Payload,
  timeoutMillis: number | undefined,
  queueTimeoutMillis: number | undefined
): Effect.Effect<Success, Failure | BlockingError> => {
  const prepared = Codec.preparePayload(task, payload)
  if (prepared instanceof InvalidPayloadError) return Effect.fail(prepared)
  return Effect.withFiber((fiber) =>
    start(executor, task, prepared.payload, prepared.transfer, timeoutMillis, queueTimeoutMillis, fiber)
  )
}

/** Every task's result in input order, or the first failure (the tasks still running cancelled). */
export const all = <Payload, Success, Failure>(
  executor: Executor,
  task: Task<Payload, Success, Failure>,
  payloads: ReadonlyArray<Payload>,
  plan: BatchPlan
): Effect.Effect<Array<Success>, Failure | BlockingError> =>
  executor.submit !== undefined
    ? Batch.run(executor.submit, { ...plan, task, settled: false }, payloads)
    : // An executor without the fast path: a fiber per task, as the user would write it.
      Effect.forEach(payloads, (payload) => one(executor, task, payload, plan.timeoutMillis, plan.queueTimeoutMillis), {
        concurrency: plan.window
      })

/** One `Result` per task, in input order. */
export const allSettled = <Payload, Success, Failure>(
  executor: Executor,
  task: Task<Payload, Success, Failure>,
  payloads: ReadonlyArray<Payload>,
  plan: BatchPlan
): Effect.Effect<Array<Result.Result<Success, Failure | BlockingError>>> =>
  executor.submit !== undefined
    ? Batch.run(executor.submit, { ...plan, task, settled: true }, payloads)
    : Effect.forEach(
        payloads,
        (payload) => Effect.result(one(executor, task, payload, plan.timeoutMillis, plan.queueTimeoutMillis)),
        { concurrency: plan.window }
      )

// Top level, not nested in `one`: a closure made here captures only its own arguments, while
// one nested in `one` would keep its whole scope alive for as long as the call waits.
const start = <Payload, Success, Failure>(
  executor: Executor,
  task: Task<Payload, Success, Failure>,
  payload: unknown,
  transfer: ReadonlyArray<Transferable>,
  timeoutMillis: number | undefined,
  queueTimeoutMillis: number | undefined,
  fiber: Fiber.Fiber<unknown, unknown>
): Effect.Effect<Success, Failure | BlockingError> => {
  const codecs = Codec.codecsOf(task)
  // Tracing off: Effect's own (no-op) span. On: a Call, whose span is made only when the
  // executor reads it, so a call waiting for a thread stays small (see ./call.ts).
  if (!fiber.cache.tracerEnabled) {
    return Effect.useSpan(codecs.spanName, codecs.spanOptions, (span) =>
      Effect.flatMap(executor.execute({ task, payload, transfer, timeoutMillis, queueTimeoutMillis, span }), (reply) =>
        Codec.decodeReply(task, reply)
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
    Effect.flatMap(executor.execute(call), (reply) => Codec.decodeReply(task, reply)),
    (exit) => Effect.sync(() => call.end(exit))
  )
}

// A string is an `Iterable<string>` too, of its characters: `runAll(shout, "hello")` for
// `["hello"]` type-checks for a task of strings, and would run one task per character.
export const checkPayloads = (payloads: unknown): Effect.Effect<void, Validate.InvalidOptionsError> =>
  Validate.iterable("payloads", payloads, "an iterable of payloads", "write [payload] for one")
