import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { Options } from "../src/index.ts"

describe("Options", () => {
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
  describe("duration", () => {
    it.effect("parses duration input", () =>
      Effect.gen(function* () {
        assert.strictEqual(Duration.toMillis(yield* Options.duration("timeout", "250 millis")), 250)
      })
    )
    it.effect("rejects negative, infinite and malformed durations", () =>
      Effect.gen(function* () {
        for (const bad of [-1, Number.POSITIVE_INFINITY, "soon" as Duration.Input]) {
          const error = yield* Effect.flip(Options.duration("timeout", bad))
          assert.strictEqual(error.option, "timeout")
        }
      })
    )
  })
})
