// The three codec steps every executor shares: encode the payload on the caller's side, run
// the handler where the executor puts it (decode → handler → encode), decode the reply on the
// caller's side. Replies are plain data so they survive `postMessage` / `structuredClone`.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import type { Reply } from "./model.ts"
import * as Blocking from "./model.ts"

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

/** A payload ready for an executor: encoded, with what it moves instead of copying. */
export interface Prepared {
  readonly payload: unknown
  readonly transfer: ReadonlyArray<Transferable>
}

const noTransfer: ReadonlyArray<Transferable> = []

/** Encodes a call's payload and collects its transfer list, or says why it cannot be sent. */
export const preparePayload = (task: Blocking.AnyTask, payload: unknown): Prepared | Blocking.InvalidPayloadError => {
  const encoded = codecsOf(task).encodePayload(payload)
  if (encoded._tag === "Failure") return new Blocking.InvalidPayloadError({ task: task.name, reason: issue(encoded) })
  let transfer: unknown
  try {
    transfer = task.transfer.payload?.(payload) ?? noTransfer
  } catch (thrown) {
    const reason = `transfer.payload threw: ${describe(thrown)}`
    return new Blocking.InvalidPayloadError({ task: task.name, reason })
  }
  // A bare buffer (from JavaScript, or cast) is no list: a pool iterating it in its dispatch
  // round threw out of the round, an uncaught exception that ended the process.
  if (!Array.isArray(transfer)) {
    const reason = `transfer.payload must return an array of buffers to move, got ${shallow(transfer)}`
    return new Blocking.InvalidPayloadError({ task: task.name, reason })
  }
  return { payload: encoded.value, transfer }
}

/**
 * A message for anything thrown; never throws itself: `String(Object.create(null))` throws, an
 * Error's `message` may be a getter that throws, a revoked Proxy throws on every inspection.
 */
export const describe = (error: unknown): string => {
  const message = isErrorUnsafe(error) ? readString(error, "message") : undefined
  if (message !== undefined) return message
  try {
    return typeof error === "symbol" ? error.toString() : String(error)
  } catch {
    return opaque(error)
  }
}

/** The most keys of a thrown object, and characters of a string in it, its description shows. */
const MAX_KEYS = 20
const MAX_STRING = 100

/**
 * A thrown value that is not an Error: a plain object (`throw { code: 1 }`), which `String` gives
 * as "[object Object]", is shown one level deep, `{ code: 1, fn: [function answer] }`: its first
 * 20 own enumerable keys, a string value quoted (its first 100 characters), a number, boolean,
 * bigint, null or undefined as written, a function by its name, binary data, an array, a map or a
 * set by its kind and size, any other object by its kind. Nothing below the top level is read (no
 * `toJSON`, no nested data: a 20 MB array costs nothing to describe, a URL with credentials in it
 * shows as `[object URL]`). Thrown binary data or an array is named by its kind and size too;
 * anything else, or an object that throws when read, as {@link describe} gives it.
 */
const describeValue = (thrown: unknown): string => {
  // By kind and size: `String` would join every item (40 MB of text for a 20 MB Uint8Array).
  if (isBulk(thrown)) return shallow(thrown)
  const described = describe(thrown)
  if (typeof thrown !== "object" || thrown === null || described !== "[object Object]") return described
  return oneLevel(thrown) ?? described
}

/** An object one level deep (see {@link describeValue}); `undefined` when reading it throws (a Proxy's trap, a getter). */
const oneLevel = (value: object): string | undefined => {
  try {
    const keys = Object.keys(value)
    const shown = keys
      .slice(0, MAX_KEYS)
      .map((key) => `${clip(key)}: ${shallow((value as Record<string, unknown>)[key])}`)
    if (keys.length > MAX_KEYS) shown.push(`... ${keys.length - MAX_KEYS} more`)
    return shown.length === 0 ? "{}" : `{ ${shown.join(", ")} }`
  } catch {
    return undefined
  }
}

// Binary data or an array; `false` for what cannot be asked (a revoked Proxy throws on `instanceof`).
const isBulk = (value: unknown): boolean => {
  try {
    return ArrayBuffer.isView(value) || value instanceof ArrayBuffer || Array.isArray(value)
  } catch {
    return false
  }
}

const clip = (text: string): string => (text.length > MAX_STRING ? `${text.slice(0, MAX_STRING)}...` : text)

const shallow = (value: unknown): string => {
  switch (typeof value) {
    case "string":
      return JSON.stringify(clip(value))
    case "function":
      return `[function ${value.name === "" ? "(anonymous)" : clip(value.name)}]`
    case "bigint":
      return `${value}n`
    case "symbol":
      return clip(value.toString())
    case "object": {
      if (value === null) return "null"
      const kind = Object.prototype.toString.call(value).slice(8, -1)
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return `[${kind} of ${value.byteLength} bytes]`
      if (Array.isArray(value)) return `[Array of ${value.length}]`
      if (value instanceof Map || value instanceof Set) return `[${kind} of ${value.size}]`
      return `[object ${clip(kind)}]`
    }
    default:
      return String(value)
  }
}

export const issue = (exit: Exit.Failure<unknown, Schema.SchemaError>): string => {
  const found = Cause.findError(exit.cause)
  // Otherwise the schema's own code threw (a transformation): what it threw says what went wrong.
  return found._tag === "Success" ? found.success.message : `schema check failed: ${describe(Cause.squash(exit.cause))}`
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
  let thenable: boolean
  try {
    thenable = isPromiseLike(result)
  } catch (thrown) {
    // A revoked Proxy, or a `then` getter that throws: nothing can be read from it.
    return { _tag: "InvalidResult", reason: `cannot be inspected: ${describe(thrown)}` }
  }
  // Never rejects: a thread whose reply rejected would die, an inline caller would wait forever.
  if (thenable) {
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
  let encoded: Exit.Exit<unknown, Schema.SchemaError>
  try {
    encoded = codecs.encodeSuccess(value)
  } catch (thrown) {
    // A result whose getters throw, or a revoked Proxy: the encoder inspects it.
    return { _tag: "InvalidResult", reason: `cannot be encoded: ${describe(thrown)}` }
  }
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

/** Total: whatever was thrown, the reply is a typed failure or a `Threw` with string fields. */
const fromThrown = (codecs: Codecs, thrown: unknown): Reply => {
  try {
    if (codecs.isFailure(thrown)) {
      const encoded = codecs.encodeFailure(thrown)
      if (encoded._tag === "Success") return { _tag: "Failure", error: encoded.value }
    }
  } catch {
    // Inspecting it threw (a revoked Proxy, a throwing getter): it is not the typed failure.
  }
  if (!isErrorUnsafe(thrown))
    return { _tag: "Threw", name: kindOf(thrown), message: describeValue(thrown), stack: undefined }
  return {
    _tag: "Threw",
    name: readString(thrown, "name") ?? kindOf(thrown),
    message: readString(thrown, "message") ?? "(the error's message cannot be read)",
    stack: withCauses(thrown, readStack(thrown))
  }
}

/** The most errors a remote stack shows below the thrown one (its causes, an AggregateError's errors). */
const MAX_CAUSES = 10

/**
 * The stack followed by what the error wraps: V8's `stack` leaves out `cause`
 * (`new Error("query failed", { cause })`) and an AggregateError's `errors` (`Promise.any`), which
 * often say why it failed, and which the caller could otherwise never see. Each as Java shows a
 * chain, "Caused by: <its stack>", read as carefully as the thrown error; a cycle ends the chain.
 */
const withCauses = (error: Error, stack: string | undefined): string | undefined => {
  const seen = new Set<unknown>([error])
  const lines: Array<string> = []
  const pending = wrapped(error)
  while (pending.length > 0 && lines.length < MAX_CAUSES) {
    const [label, value] = pending.shift()!
    if (seen.has(value)) continue
    seen.add(value)
    if (isErrorUnsafe(value)) {
      const head = `${readString(value, "name") ?? kindOf(value)}: ${readString(value, "message") ?? ""}`
      lines.push(`${label}: ${readStack(value) ?? head}`)
      pending.push(...wrapped(value))
    } else lines.push(`${label}: ${describeValue(value)}`)
  }
  if (lines.length === 0) return stack
  const head = stack ?? `${readString(error, "name") ?? kindOf(error)}: ${readString(error, "message") ?? ""}`
  return [head, ...lines].join("\n")
}

/** An error's `cause` and, for an AggregateError, its `errors`, labelled; nothing when reading them throws. */
const wrapped = (error: Error): Array<readonly [label: string, value: unknown]> => {
  const out: Array<readonly [string, unknown]> = []
  try {
    const cause: unknown = (error as { cause?: unknown }).cause
    if (cause !== undefined) out.push(["Caused by", cause])
    const errors: unknown = error instanceof AggregateError ? error.errors : undefined
    if (Array.isArray(errors)) {
      for (let i = 0; i < Math.min(errors.length, MAX_CAUSES); i++) out.push([`Caused by (errors[${i}])`, errors[i]])
    }
  } catch {
    // A getter that throws, or a Proxy: what it wraps cannot be read.
  }
  return out
}

/** `instanceof Error`, false when asking throws (a Proxy whose getPrototypeOf trap throws, or revoked). */
const isErrorUnsafe = (u: unknown): u is Error => {
  try {
    return u instanceof Error
  } catch {
    return false
  }
}

/** A field of an Error as a string: non-strings are turned into one, a throwing read gives undefined. */
const readString = (error: Error, field: "name" | "message"): string | undefined => {
  try {
    const value: unknown = error[field]
    if (typeof value === "string") return value
    if (value === undefined || value === null) return undefined
    // One level deep, as a thrown object: JSON would read all of it (megabytes, a URL's credentials).
    return typeof value === "object" ? oneLevel(value) : String(value)
  } catch {
    return undefined
  }
}

/**
 * The stack as a string: a library that sets `Error.prepareStackTrace` to return the call sites
 * leaves an array there, formatted here as V8 would have.
 */
const readStack = (error: Error): string | undefined => {
  try {
    const stack: unknown = error.stack
    if (typeof stack === "string") return stack
    if (Array.isArray(stack)) {
      const head = `${readString(error, "name") ?? "Error"}: ${readString(error, "message") ?? ""}`
      return [head, ...stack.map((site) => `    at ${String(site)}`)].join("\n")
    }
    return undefined
  } catch {
    return undefined
  }
}

/** `typeof`, but never throws and says "proxy" for what cannot be inspected. */
const kindOf = (u: unknown): string => {
  if (typeof u !== "object" || u === null) return typeof u
  try {
    Object.prototype.toString.call(u)
    return "object"
  } catch {
    return "proxy"
  }
}

const opaque = (u: unknown): string => {
  try {
    return Object.prototype.toString.call(u)
  } catch {
    return "[an object that cannot be inspected]"
  }
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
      // Strings already when this package built the reply; a thread running another copy may not.
      return Effect.fail(
        new Blocking.HandlerError({
          task: task.name,
          errorName: asString(reply.name),
          errorMessage: asString(reply.message),
          remoteStack: reply.stack === undefined ? undefined : asString(reply.stack)
        })
      )
    case "InvalidPayload":
      return Effect.fail(new Blocking.InvalidPayloadError({ task: task.name, reason: reply.reason }))
    case "InvalidResult":
      return Effect.fail(new Blocking.InvalidResultError({ task: task.name, reason: reply.reason }))
  }
}

const asString = (u: unknown): string => (typeof u === "string" ? u : describe(u))
