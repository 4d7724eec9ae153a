import { assert, describe, it } from "@effect/vitest"
import { Config, ConfigProvider, Duration, Effect } from "effect"
import { Options } from "../src/index.ts"

describe("Options", () => {
  describe("optionalConfig", () => {
    it.effect("is undefined when unset, the value when set, and a ConfigError when it does not parse", () =>
      Effect.gen(function* () {
        const read = (env: Record<string, string>) =>
          Options.optionalConfig(Config.Int("LIMIT")).parse(ConfigProvider.fromEnv({ env }))
        assert.isUndefined(yield* read({}))
        assert.strictEqual(yield* read({ LIMIT: "8" }), 8)
        const error = yield* Effect.flip(read({ LIMIT: "eight" }))
        assert.strictEqual(error._tag, "ConfigError")
      })
    )
  })
  describe("configKeys", () => {
    it.effect("names the key of an option it knows in its InvalidOptionsError, and leaves others as they are", () =>
      Effect.gen(function* () {
        const named = Options.configKeys("VOLLEY_RETRY", { retries: "RETRIES" })
        const known = yield* Effect.flip(named(Options.positiveInt("retries", -2, 0)))
        assert.strictEqual(known.option, "retries")
        assert.strictEqual(
          known.message,
          "Invalid option retries: must be an integer >= 0, got -2 (VOLLEY_RETRY_RETRIES)"
        )
        const other = yield* Effect.flip(named(Options.positiveInt("concurrency", 0)))
        assert.strictEqual(other.message, "Invalid option concurrency: must be an integer >= 1, got 0")
      })
    )
  })
  describe("positiveInt", () => {
    it.effect("accepts an integer >= 1", () =>
      Effect.gen(function* () {
        assert.strictEqual(yield* Options.positiveInt("concurrency", 16), 16)
      })
    )
    it.effect("rejects 0, fractions and NaN with the option's name and value", () =>
      Effect.gen(function* () {
        for (const bad of [0, -1, 1.5, Number.NaN]) {
          const error = yield* Effect.flip(Options.positiveInt("concurrency", bad))
          assert.strictEqual(error._tag, "InvalidOptionsError")
          assert.strictEqual(error.option, "concurrency")
          assert.include(error.message, `got ${bad}`)
        }
      })
    )
  })
  describe("optional", () => {
    // Found by a boundary sweep: `deadline: null`, `timeout: null`, `perHost: null` (JavaScript,
    // JSON) were refused where an option with a default (`concurrency: null`) is unset.
    it.effect("passes undefined and null through as unset and checks anything else", () =>
      Effect.gen(function* () {
        const check = (value: unknown) => Options.optional(value, (d) => Options.duration("timeout", d as never))
        assert.isUndefined(yield* check(undefined))
        assert.isUndefined(yield* check(null))
        assert.strictEqual(Duration.toMillis((yield* check("1 second"))!), 1000)
        assert.strictEqual((yield* Effect.flip(check("soon"))).option, "timeout")
      })
    )
  })
  describe("array and record", () => {
    it.effect("accept an array and an object of options, and name what they got otherwise", () =>
      Effect.gen(function* () {
        assert.deepStrictEqual(yield* Options.array("methods", ["GET"]), ["GET"])
        assert.deepStrictEqual(yield* Options.record("rateLimit", { limit: 1 }), { limit: 1 })
        const string = yield* Effect.flip(Options.array("methods", "GET"))
        assert.strictEqual(string.message, 'Invalid option methods: must be an array, got "GET"')
        const set = yield* Effect.flip(Options.array("statuses", new Set([503])))
        assert.strictEqual(set.message, "Invalid option statuses: must be an array, got object")
        for (const [bad, got] of [
          [null, "null"],
          [1, "1"],
          [[], "an array"],
          ["x", '"x"']
        ] as const) {
          const error = yield* Effect.flip(Options.record("rateLimit", bad as never))
          assert.strictEqual(error.message, `Invalid option rateLimit: must be an object, got ${got}`)
        }
      })
    )
  })
  describe("duration", () => {
    it.effect("parses duration input", () =>
      Effect.gen(function* () {
        assert.strictEqual(Duration.toMillis(yield* Options.duration("timeout", "250 millis")), 250)
      })
    )
    it.effect("rejects negative, infinite and malformed durations", () =>
      Effect.gen(function* () {
        for (const bad of [-1, Number.POSITIVE_INFINITY, Number.NaN, "soon" as Duration.Input]) {
          const error = yield* Effect.flip(Options.duration("timeout", bad))
          assert.strictEqual(error.option, "timeout")
        }
      })
    )
    // Found by a boundary sweep: Effect's decoder reads these as 0 without a word, and 0 turns
    // some limits off (`headersTimeout: { secs: 30 }` was no headers timeout at all).
    it.effect("rejects NaN in a pair or an object, and objects with fields a duration does not have", () =>
      Effect.gen(function* () {
        for (const bad of [
          [Number.NaN, 0],
          [1, Number.NaN],
          { seconds: Number.NaN },
          { secs: 30 },
          { millis: 5 },
          { seconds: "30" },
          { seconds: 30, extra: 1 }
        ]) {
          const error = yield* Effect.flip(Options.duration("headersTimeout", bad as unknown as Duration.Input))
          assert.strictEqual(error.option, "headersTimeout", JSON.stringify(bad))
          assert.include(error.message, "must be a duration")
        }
        // Pairs and objects still read as Effect reads them.
        assert.strictEqual(Duration.toMillis(yield* Options.duration("t", [1, 500_000_000])), 1500)
        assert.strictEqual(Duration.toMillis(yield* Options.duration("t", { minutes: 1, milliseconds: 5 })), 60_005)
        assert.strictEqual(Duration.toMillis(yield* Options.duration("t", { seconds: 2, days: undefined })), 2000)
        assert.strictEqual(Duration.toMillis(yield* Options.duration("t", {})), 0)
        // A duration object of another library (Luxon's): state of its own, its fields as getters.
        class LibraryDuration {
          readonly values = { seconds: 30 }
          readonly isLibraryDuration = true
          get seconds(): number {
            return this.values.seconds
          }
        }
        assert.strictEqual(Duration.toMillis(yield* Options.duration("t", new LibraryDuration())), 30_000)
        const nan = Object.assign(new LibraryDuration(), { values: { seconds: Number.NaN } })
        assert.include((yield* Effect.flip(Options.duration("t", nan))).message, "must be a duration")
      })
    )
    it.effect("rejects 0 when the duration must be positive, and only then", () =>
      Effect.gen(function* () {
        assert.strictEqual(Duration.toMillis(yield* Options.duration("timeout", 0)), 0)
        const error = yield* Effect.flip(Options.duration("keepAliveTimeout", 0, { positive: true }))
        assert.include(error.message, "> 0")
      })
    )
  })

  describe("oneOf", () => {
    it.effect("accepts an allowed value and names the option, the choices and the value otherwise", () =>
      Effect.gen(function* () {
        const algorithms = ["token-bucket", "fixed-window"] as const
        assert.strictEqual(yield* Options.oneOf("algorithm", "fixed-window", algorithms), "fixed-window")
        const error = yield* Effect.flip(Options.oneOf("algorithm", "bogus", algorithms))
        assert.strictEqual(
          error.message,
          'Invalid option algorithm: must be one of "token-bucket", "fixed-window", got "bogus"'
        )
      })
    )
  })
})
