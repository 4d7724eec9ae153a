// Tasks that attack the pool thread running them: they throw every kind of value (from the
// handler, from a rejected promise, from a timer, a microtask or a floating promise), exit the
// thread, or allocate past its heap limit. Pool threads import this module; it imports only
// Blocking from core's sources and effect/Schema, not the @volley/core barrel (HTTP included).
import * as Schema from "effect/Schema"
import * as Blocking from "../../packages/core/src/Blocking.ts"

/** Every kind of value a handler can throw. */
export const throwables = [
  "error",
  "string",
  "number",
  "null",
  "undefined",
  "object",
  "null-prototype",
  "symbol",
  "bigint",
  "function",
  "odd-error",
  "throwing-error",
  "revoked-proxy",
  "thenable-trap"
] as const
export type Throwable = (typeof throwables)[number]

/**
 * Where the value is thrown. `sync` and `async` throw from the handler (its caller must get a
 * HandlerError); the others throw outside it while the handler never settles, which kills the
 * thread (its caller must get a WorkerDiedError, the main process must not notice).
 */
export const places = ["sync", "async", "timer", "microtask", "floating"] as const
export type Place = (typeof places)[number]

const make = (kind: Throwable): unknown => {
  switch (kind) {
    case "error":
      return new Error("chaos")
    case "string":
      return "chaos"
    case "number":
      return 42
    case "null":
      return null
    case "undefined":
      return undefined
    case "object":
      return { code: 7, message: { not: "a string" } }
    case "null-prototype":
      return Object.create(null)
    case "symbol":
      return Symbol("chaos")
    case "bigint":
      return 10n
    case "function":
      return () => "chaos"
    case "odd-error": {
      // What a library that sets Error.prepareStackTrace to return call sites leaves behind.
      const error = new Error("chaos")
      Object.defineProperty(error, "message", { value: { nested: true } })
      Object.defineProperty(error, "stack", { value: [{ line: 1 }, { line: 2 }] })
      Object.defineProperty(error, "name", { value: 42 })
      return error
    }
    case "throwing-error": {
      const error = new Error("chaos")
      const boom = () => {
        throw new Error("getter")
      }
      for (const key of ["message", "name", "stack", "code"]) Object.defineProperty(error, key, { get: boom })
      return error
    }
    case "revoked-proxy": {
      const { proxy, revoke } = Proxy.revocable(new Error("chaos"), {})
      revoke()
      return proxy
    }
    case "thenable-trap":
      // Looks like a promise to whoever checks for `then`, and throws when they do.
      return {
        // biome-ignore lint/suspicious/noThenProperty: a thenable that traps, on purpose
        get then() {
          throw null
        }
      }
  }
}

const never = new Promise<string>(() => {})

export const hostile = Blocking.task({
  module: import.meta.url,
  name: "hostile",
  payload: Schema.Struct({ kind: Schema.Literals(throwables), place: Schema.Literals(places) }),
  success: Schema.String,
  handler: ({ kind, place }): string | Promise<string> => {
    switch (place) {
      case "sync":
        throw make(kind)
      case "async":
        return Promise.resolve().then(() => {
          throw make(kind)
        })
      case "timer":
        setTimeout(() => {
          throw make(kind)
        })
        return never
      case "microtask":
        queueMicrotask(() => {
          throw make(kind)
        })
        return never
      case "floating":
        void Promise.reject(make(kind))
        return never
    }
  }
})

/**
 * Returns (or resolves with) every kind of value as its result: the schema lets anything
 * through, so values a thread cannot send back (a function, a symbol, a revoked proxy) must
 * fail as InvalidResultError, not kill the thread or leave the caller waiting.
 */
export const returns = Blocking.task({
  module: import.meta.url,
  name: "returns",
  payload: Schema.Struct({ kind: Schema.Literals(throwables), async: Schema.Boolean }),
  success: Schema.Unknown,
  handler: ({ kind, async }) => (async ? Promise.resolve(make(kind)) : make(kind))
})

/** Exits the thread, from the handler or from a timer while the handler never settles. */
export const exit = Blocking.task({
  module: import.meta.url,
  name: "exit",
  payload: Schema.Struct({ code: Schema.Number, later: Schema.Boolean }),
  success: Schema.String,
  handler: ({ code, later }) => {
    if (!later) return process.exit(code)
    setTimeout(() => process.exit(code))
    return never
  }
})

/** Allocates until the thread's heap limit (`resourceLimits`) is hit. Never give it to an unlimited pool. */
export const hog = Blocking.task({
  module: import.meta.url,
  name: "hog",
  payload: Schema.Void,
  success: Schema.Number,
  handler: () => {
    const kept: Array<Array<number>> = []
    for (;;) kept.push(new Array(100_000).fill(kept.length))
  }
})
