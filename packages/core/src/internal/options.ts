// The option validators, without the Config helpers: Blocking.ts imports this leaf, so a worker
// thread that imports a task module does not load effect/Config. Options.ts re-exports it all.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { redactUrl } from "./url.ts"

/**
 * An option was missing, out of range or of the wrong shape.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const program = Options.positiveInt("concurrency", 0).pipe(
 *   Effect.catchTag("InvalidOptionsError", (e) => Effect.succeed(e.message))
 * )
 * // "Invalid option concurrency: must be an integer >= 1, got 0"
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptionsError extends Schema.TaggedError<InvalidOptionsError>()("InvalidOptionsError", {
  option: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Invalid option ${this.option}: ${this.reason}`
  }
}

/**
 * Checks that `value` is an integer >= `min` (default 1).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const n = Effect.runSync(Options.positiveInt("concurrency", 16)) // 16
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const positiveInt = (option: string, value: number, min = 1): Effect.Effect<number, InvalidOptionsError> =>
  Number.isSafeInteger(value) && value >= min
    ? Effect.succeed(value)
    : Effect.fail(new InvalidOptionsError({ option, reason: `must be an integer >= ${min}, got ${show(value)}` }))

/**
 * Checks that `value` is a finite, non-negative duration (positive with `{ positive: true }`)
 * and returns it as a `Duration`. Accepts anything `Duration.Input` accepts (`"5 seconds"`, a
 * number of milliseconds, a `Duration`); `NaN` is not a duration, in a `[seconds, nanos]` pair
 * or a duration object either, nor is a plain object with a field a duration object does not have
 * (an instance, such as Luxon's `Duration`, is read through its getters, as Effect reads it).
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const d = Effect.runSync(Options.duration("timeout", "250 millis"))
 * Duration.toMillis(d) // 250
 * const zero = Effect.runSyncExit(Options.duration("keepAliveTimeout", 0, { positive: true })) // fails
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const duration = (
  option: string,
  value: Duration.Input,
  bounds?: { readonly positive?: boolean | undefined }
): Effect.Effect<Duration.Duration, InvalidOptionsError> => {
  const decoded = misread(value) ? undefined : Duration.fromInput(value)
  if (decoded === undefined || decoded._tag === "None") {
    return Effect.fail(new InvalidOptionsError({ option, reason: `must be a duration, got ${show(value)}` }))
  }
  const millis = Duration.toMillis(decoded.value)
  const positive = bounds?.positive === true
  return Number.isFinite(millis) && (positive ? millis > 0 : millis >= 0)
    ? Effect.succeed(decoded.value)
    : Effect.fail(
        new InvalidOptionsError({
          option,
          reason: `must be a finite duration ${positive ? "> 0" : ">= 0"}, got ${show(value)}`
        })
      )
}

/**
 * Checks that `value` is one of `allowed` (compared with `===`), for options typed as a union
 * of literals that JavaScript callers, config files or casts can still get wrong.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const algorithm = Options.oneOf("rateLimit.algorithm", "bogus", ["token-bucket", "fixed-window"] as const)
 * // fails: Invalid option rateLimit.algorithm: must be one of "token-bucket", "fixed-window", got "bogus"
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const oneOf = <const A extends string | number | boolean>(
  option: string,
  value: unknown,
  allowed: ReadonlyArray<A>
): Effect.Effect<A, InvalidOptionsError> =>
  allowed.includes(value as A)
    ? Effect.succeed(value as A)
    : Effect.fail(
        new InvalidOptionsError({
          option,
          reason: `must be one of ${allowed.map(show).join(", ")}, got ${show(value)}`
        })
      )

/**
 * Checks that `value` is an array (not any iterable: a string is iterable, and a header name
 * given as one must not become a list of its characters). The items are the caller's to check.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const methods = Options.array("methods", "GET")
 * // fails: Invalid option methods: must be an array, got "GET"
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const array = (option: string, value: unknown): Effect.Effect<ReadonlyArray<unknown>, InvalidOptionsError> =>
  Array.isArray(value)
    ? Effect.succeed(value)
    : Effect.fail(new InvalidOptionsError({ option, reason: `must be an array, got ${show(value)}` }))

/**
 * Checks that `value` is an object of options (not `null`, not an array), for a group of
 * options such as `rateLimit` that a JavaScript caller can still pass as anything.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const fromJavaScript: object = JSON.parse("null") // what an untyped caller can pass
 * const rateLimit = Options.record("rateLimit", fromJavaScript)
 * // fails: Invalid option rateLimit: must be an object, got null
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const record = <A extends object>(option: string, value: A): Effect.Effect<A, InvalidOptionsError> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
    ? Effect.succeed(value)
    : Effect.fail(
        new InvalidOptionsError({
          option,
          reason: `must be an object, got ${Array.isArray(value) ? "an array" : show(value)}`
        })
      )

/**
 * Checks that `value` is `expected` (an iterable of something) and not a string: a string is an
 * iterable of its characters, so a lone URL written for `[url]` type-checks and would be taken
 * one character at a time; anything else not iterable (a lone URL object, `null`) would die when
 * asked for an iterator. `hint` says how to write a single one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const requests = Options.iterable("requests", "http://api.test/", "an iterable of requests", "write [url] for one URL")
 * // fails: Invalid option requests: must be an iterable of requests, got a string (write [url] for one URL)
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const iterable = (
  option: string,
  value: unknown,
  expected: string,
  hint: string
): Effect.Effect<void, InvalidOptionsError> => {
  const got =
    typeof value === "string" || value instanceof String
      ? "a string"
      : typeof (value as Partial<Iterable<unknown>> | null | undefined)?.[Symbol.iterator] === "function"
        ? undefined
        : value === null
          ? "null"
          : value instanceof URL
            ? "a URL"
            : typeof value === "object"
              ? "an object that is not iterable"
              : `a ${typeof value}`
  return got === undefined
    ? Effect.void
    : Effect.fail(new InvalidOptionsError({ option, reason: `must be ${expected}, got ${got} (${hint})` }))
}

/**
 * Validates an optional value with `check`, passing `undefined` and `null` through as
 * `undefined`: options from JavaScript or JSON say "unset" with either, as they do for options
 * with a default (`options.concurrency ?? 16`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Options } from "@volley/core"
 *
 * const none = Effect.runSync(Options.optional(undefined, (n: number) => Options.positiveInt("perHost", n)))
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const optional = <A, B>(
  value: A | null | undefined,
  check: (value: A) => Effect.Effect<B, InvalidOptionsError>
): Effect.Effect<B | undefined, InvalidOptionsError> =>
  value === undefined || value === null ? Effect.undefined : check(value)

// What Effect's decoder turns into 0 without a word: `NaN` as milliseconds, in a
// `[seconds, nanos]` pair or in a field of a duration object, and an object field it does not
// know (`{ secs: 30 }`, `{ millis: 5 }`) or of another type. 0 switches some limits off.
const misread = (value: unknown): boolean => {
  if (typeof value === "number") return Number.isNaN(value)
  if (typeof value !== "object" || value === null || Duration.isDuration(value)) return false
  if (Array.isArray(value)) return value.some((part) => Number.isNaN(part))
  // Read as Effect reads them, getters included: a Luxon or Temporal duration's fields are.
  for (const key of DURATION_FIELDS) {
    const part = (value as Record<string, unknown>)[key]
    if (part !== undefined && !(typeof part === "number" && !Number.isNaN(part))) return true
  }
  // A field a duration does not have, in a plain object (a literal, JSON) only: an instance
  // (Luxon's Duration) keeps state of its own beside the getters Effect reads.
  const prototype = Object.getPrototypeOf(value)
  return (
    (prototype === Object.prototype || prototype === null) &&
    Object.keys(value).some((key) => !DURATION_FIELDS.has(key))
  )
}

const DURATION_FIELDS: ReadonlySet<string> = new Set([
  "weeks",
  "days",
  "hours",
  "minutes",
  "seconds",
  "milliseconds",
  "microseconds",
  "nanoseconds"
])

// A string is shown as given, but a URL's user info and signed query parameters redacted as
// Effect redacts a request's URL: `Proxy.make(process.env.HTTPS_PROXY)` echoed the password.
const show = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(redactUrl(value))
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value)
  if (value === null || value === undefined) return String(value)
  if (Duration.isDuration(value)) return Duration.format(value)
  return typeof value
}
