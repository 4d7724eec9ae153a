// The tasks of the chaos suite as data: what to run (a Spec), running it, and the outcomes each
// may end with. Shared by the executor and pipeline scenarios.
import { Blocking, type Options } from "@volley/core"
import { Cause, type Effect, Exit } from "effect"
import * as Benign from "./benignTasks.ts"
import type { Random } from "./chaos.ts"
import * as Hostile from "./hostileTasks.ts"

export type Spec =
  | { readonly _tag: "double"; readonly n: number; readonly millis: number }
  | { readonly _tag: "wait"; readonly n: number; readonly millis: number }
  | { readonly _tag: "hostile"; readonly kind: Hostile.Throwable; readonly place: Hostile.Place }
  | { readonly _tag: "returns"; readonly kind: Hostile.Throwable; readonly async: boolean }
  | { readonly _tag: "exit"; readonly code: number; readonly later: boolean }
  | { readonly _tag: "hog" }

/** What may legitimately end a task besides its own outcome. */
export interface May {
  /** It was interrupted (alone or with its batch). */
  readonly interrupt: boolean
  /** Its executor was closed with `shutdown: "cancel"` while it ran. */
  readonly shutDown: boolean
}

/** A task: hostile with probability `hostile`, else well-behaved. `limited`: the pool has `resourceLimits`. */
export const taskSpec = (rng: Random, hostile: number, limited: boolean): Spec =>
  rng.chance(hostile)
    ? hostileSpec(rng, limited)
    : rng.chance(0.7)
      ? { _tag: "double", n: rng.int(0, 1000), millis: rng.int(0, 15) }
      : { _tag: "wait", n: rng.int(0, 1000), millis: rng.int(1, 150) }

export const hostileSpec = (rng: Random, limited: boolean): Spec => {
  const roll = rng.next()
  if (roll < 0.12) return { _tag: "exit", code: rng.pick([0, 1, 7]), later: rng.chance(0.5) }
  if (roll < 0.2 && limited) return { _tag: "hog" }
  if (roll < 0.35) return { _tag: "returns", kind: rng.pick(Hostile.throwables), async: rng.chance(0.5) }
  return { _tag: "hostile", kind: rng.pick(Hostile.throwables), place: rng.pick(Hostile.places) }
}

/**
 * A task the calling thread survives (for `Blocking.layerInline`): no exits, no heap
 * exhaustion, no throws outside the handler (inline, those would reach this process).
 */
export const inlineSpec = (rng: Random): Spec => {
  const roll = rng.next()
  if (roll < 0.3) return { _tag: "double", n: rng.int(0, 1000), millis: rng.int(0, 2) }
  if (roll < 0.6) return { _tag: "returns", kind: rng.pick(Hostile.throwables), async: rng.chance(0.5) }
  return { _tag: "hostile", kind: rng.pick(Hostile.throwables), place: rng.pick(["sync", "async"] as const) }
}

/** What `Blocking.run` may fail with. */
export type Failure = Blocking.BlockingError | Options.InvalidOptionsError

export const runSpec = (spec: Spec): Effect.Effect<unknown, Failure, Blocking.BlockingExecutor> => {
  switch (spec._tag) {
    case "double":
      return Blocking.run(Benign.double, spec)
    case "wait":
      return Blocking.run(Benign.wait, spec)
    case "hostile":
      return Blocking.run(Hostile.hostile, spec)
    case "returns":
      return Blocking.run(Hostile.returns, spec)
    case "exit":
      return Blocking.run(Hostile.exit, spec)
    case "hog":
      return Blocking.run(Hostile.hog, undefined)
  }
}

/** Results a thread can send back (structured clone); the others must fail as InvalidResultError. */
const sendable: ReadonlySet<Hostile.Throwable> = new Set([
  "error",
  "string",
  "number",
  "null",
  "undefined",
  "object",
  "null-prototype",
  "bigint",
  "odd-error"
])

/** Why `exit` is not an outcome `spec` may end with, or undefined when it is. */
export const judge = (spec: Spec, exit: Exit.Exit<unknown, Failure>, may: May): string | undefined => {
  if (Exit.isSuccess(exit)) return judgeValue(spec, exit.value)
  if (Cause.hasDies(exit.cause)) return `died: ${Cause.pretty(exit.cause)}`
  if (Cause.hasInterruptsOnly(exit.cause)) return may.interrupt ? undefined : "interrupted, yet no one interrupted it"
  const found = Cause.findError(exit.cause)
  if (found._tag === "Failure") return `no typed error: ${Cause.pretty(exit.cause)}`
  return judgeError(spec, found.success, may)
}

/** Why `value` is not what `spec` succeeds with, or undefined when it is. */
export const judgeValue = (spec: Spec, value: unknown): string | undefined => {
  if (spec._tag === "double") return value === spec.n * 2 ? undefined : `wrong result ${String(value)}`
  if (spec._tag === "wait") return value === spec.n ? undefined : `wrong result ${String(value)}`
  if (spec._tag === "returns") {
    return sendable.has(spec.kind) ? undefined : `a ${spec.kind} result came back as ${typeof value}`
  }
  return `succeeded with ${String(value)}`
}

/** Why `error` is not a failure `spec` may end with, or undefined when it is. */
export const judgeError = (spec: Spec, error: Failure, may: May): string | undefined => {
  if (!Blocking.isBlockingError(error)) return `unexpected ${error._tag}`
  if (error._tag === "ExecutorShutDownError") return may.shutDown ? undefined : "shut down, yet the pool was open"
  const crashLoop = error._tag === "WorkerDiedError" && error.reason === "crash-loop"
  switch (spec._tag) {
    case "double":
    case "wait":
      // The benign module never kills a thread: a death is never blamed on its tasks.
      return `failed with ${error._tag}: ${error.message}`
    case "hostile":
      if (spec.place === "sync" || spec.place === "async") {
        if (crashLoop) return undefined
        if (error._tag !== "HandlerError") return `expected HandlerError, got ${error._tag}: ${error.message}`
        const fields = [error.errorName, error.errorMessage]
        if (!fields.every((f) => typeof f === "string")) return `HandlerError with non-string fields`
        if (error.remoteStack !== undefined && typeof error.remoteStack !== "string") return "non-string remoteStack"
        return undefined
      }
      return error._tag === "WorkerDiedError" ? undefined : `expected WorkerDiedError, got ${error._tag}`
    case "returns":
      // The handler did not throw: its result cannot be sent back. (The pool reports a result
      // that fails while being encoded as a HandlerError: typed, if not the most precise.)
      if (crashLoop || error._tag === "InvalidResultError") return undefined
      return error._tag === "HandlerError" && !sendable.has(spec.kind)
        ? undefined
        : `expected InvalidResultError, got ${error._tag}: ${error.message}`
    case "exit":
      return error._tag === "WorkerDiedError" ? undefined : `expected WorkerDiedError, got ${error._tag}`
    case "hog":
      return error._tag === "WorkerDiedError" && (error.reason === "out-of-memory" || crashLoop)
        ? undefined
        : `expected WorkerDiedError (out-of-memory), got ${error._tag}: ${error.message}`
  }
}

export const category = (spec: Spec): string =>
  spec._tag === "hostile" ? (spec.place === "sync" || spec.place === "async" ? "throw" : "throw-outside") : spec._tag

export const outcome = (exit: Exit.Exit<unknown, Failure>): string => {
  if (Exit.isSuccess(exit)) return "success"
  if (Cause.hasInterruptsOnly(exit.cause)) return "interrupted"
  const found = Cause.findError(exit.cause)
  if (found._tag === "Failure") return "defect"
  const error = found.success
  return error._tag === "WorkerDiedError" ? `WorkerDiedError(${error.reason})` : error._tag
}
