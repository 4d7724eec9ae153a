// The three codec steps every executor shares: encode the payload on the caller's side, run
// the handler where the executor puts it (decode → handler → encode), decode the reply on the
// caller's side. Replies are plain data so they survive `postMessage` / `structuredClone`.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import * as Blocking from "../../Blocking.ts"

/** Wire shape of the work a handler did, produced next to the handler. */
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

export interface Codecs {
  readonly encodePayload: (payload: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decodePayload: (encoded: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly encodeSuccess: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decodeSuccess: (encoded: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly isFailure: (u: unknown) => boolean
  readonly encodeFailure: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decodeFailure: (encoded: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  /** Span name and options of `Blocking.run`, built once per task rather than per call. */
  readonly spanName: string
  readonly spanOptions: { readonly attributes: Record<string, unknown> }
}

const cache = new WeakMap<Blocking.AnyTask, Codecs>()

/** Compiled once per task: Schema parsers are not free to build. */
export const codecsOf = (task: Blocking.AnyTask): Codecs => {
  let codecs = cache.get(task)
  if (codecs === undefined) {
    codecs = makeCodecs(task)
    cache.set(task, codecs)
  }
  return codecs
}

const makeCodecs = (task: Blocking.AnyTask): Codecs => ({
  spanName: `Blocking.run ${task.name}`,
  spanOptions: { attributes: { "volley.blocking.task": task.name } },
  encodePayload: Schema.encodeUnknownExit(task.payload),
  decodePayload: Schema.decodeUnknownExit(task.payload),
  encodeSuccess: Schema.encodeUnknownExit(task.success),
  decodeSuccess: Schema.decodeUnknownExit(task.success),
  isFailure: Schema.is(task.failure),
  encodeFailure: Schema.encodeUnknownExit(task.failure),
  decodeFailure: Schema.decodeUnknownExit(task.failure)
})

/** A message for anything thrown; never throws itself (`String(Object.create(null))` does). */
export const describe = (error: unknown): string => {
  if (error instanceof Error) return error.message
  try {
    return String(error)
  } catch {
    return Object.prototype.toString.call(error)
  }
}

export const issue = (exit: Exit.Failure<unknown, Schema.SchemaError>): string => {
  const found = Cause.findError(exit.cause)
  return found._tag === "Success" ? found.success.message : "schema check failed"
}

/**
 * Decodes the payload, calls the handler and encodes what it produced. Synchronous handlers
 * get a synchronous reply (no promise per task on the hot path).
 */
export const invoke = (
  codecs: Codecs,
  task: Blocking.AnyTask,
  encodedPayload: unknown,
  context: Blocking.TaskContext,
  transferOut: Array<Transferable> | undefined
): Reply | Promise<Reply> => {
  const payload = codecs.decodePayload(encodedPayload)
  if (payload._tag === "Failure") return { _tag: "InvalidPayload", reason: issue(payload) }
  let result: unknown
  try {
    result = task.handler(payload.value, context)
  } catch (thrown) {
    return fromThrown(codecs, thrown)
  }
  if (isPromiseLike(result)) {
    return Promise.resolve(result).then(
      (value) => fromValue(codecs, task, value, transferOut),
      (thrown: unknown) => fromThrown(codecs, thrown)
    )
  }
  return fromValue(codecs, task, result, transferOut)
}

const fromValue = (
  codecs: Codecs,
  task: Blocking.AnyTask,
  value: unknown,
  transferOut: Array<Transferable> | undefined
): Reply => {
  const encoded = codecs.encodeSuccess(value)
  if (encoded._tag === "Failure") return { _tag: "InvalidResult", reason: issue(encoded) }
  if (transferOut !== undefined && task.transfer.success !== undefined) {
    // A throw here is the task's bug, not the thread's: it must not kill the thread (or, inline,
    // escape as a defect or leave an async handler's caller waiting forever).
    try {
      for (const buffer of task.transfer.success(value)) transferOut.push(buffer)
    } catch (thrown) {
      return { _tag: "InvalidResult", reason: `transfer.success threw: ${describe(thrown)}` }
    }
  }
  return { _tag: "Success", value: encoded.value }
}

const fromThrown = (codecs: Codecs, thrown: unknown): Reply => {
  if (codecs.isFailure(thrown)) {
    const encoded = codecs.encodeFailure(thrown)
    if (encoded._tag === "Success") return { _tag: "Failure", error: encoded.value }
  }
  if (thrown instanceof Error) {
    return { _tag: "Threw", name: thrown.name, message: thrown.message, stack: thrown.stack }
  }
  return { _tag: "Threw", name: typeof thrown, message: describe(thrown), stack: undefined }
}

const isPromiseLike = (u: unknown): u is PromiseLike<unknown> =>
  typeof u === "object" && u !== null && typeof (u as { then?: unknown }).then === "function"

/** Caller side: the reply becomes the task's success, its typed failure, or an executor error. */
export const decodeReply = <P, S, F>(
  task: Blocking.Task<P, S, F>,
  reply: Reply
): Effect.Effect<S, F | Blocking.BlockingError> => {
  const codecs = codecsOf(task)
  switch (reply._tag) {
    case "Success": {
      const decoded = codecs.decodeSuccess(reply.value)
      return decoded._tag === "Success"
        ? Effect.succeed(decoded.value as S)
        : Effect.fail(new Blocking.InvalidResultError({ task: task.name, reason: issue(decoded) }))
    }
    case "Failure": {
      const decoded = codecs.decodeFailure(reply.error)
      return decoded._tag === "Success"
        ? Effect.fail(decoded.value as F)
        : Effect.fail(new Blocking.InvalidResultError({ task: task.name, reason: issue(decoded) }))
    }
    case "Threw":
      return Effect.fail(
        new Blocking.HandlerError({
          task: task.name,
          errorName: reply.name,
          errorMessage: reply.message,
          remoteStack: reply.stack
        })
      )
    case "InvalidPayload":
      return Effect.fail(new Blocking.InvalidPayloadError({ task: task.name, reason: reply.reason }))
    case "InvalidResult":
      return Effect.fail(new Blocking.InvalidResultError({ task: task.name, reason: reply.reason }))
  }
}
