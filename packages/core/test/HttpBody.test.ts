// The per-call body settings: what HttpBody's combinators provide, and what they refuse.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { HttpBody, Options } from "../src/index.ts"

describe("HttpBody", () => {
  describe("withDecompress", () => {
    it.effect("provides the setting to the effect it wraps", () =>
      Effect.gen(function* () {
        assert.strictEqual(yield* HttpBody.Decompress, undefined)
        assert.isFalse(yield* HttpBody.Decompress.pipe(HttpBody.withDecompress(false)))
        assert.isTrue(yield* HttpBody.Decompress.pipe(HttpBody.withDecompress(true)))
      })
    )

    // Found by a boundary sweep: `withDecompress("false")` from JavaScript (an environment
    // variable passed on) provided the string, which the client read as truthy: decoding on.
    // A defect, so that its type (a boolean) adds no error for TypeScript callers.
    it.effect("dies with InvalidOptionsError for a value that is not a boolean, running nothing", () =>
      Effect.gen(function* () {
        let ran = false
        for (const enabled of ["false", 0, null]) {
          const exit = yield* Effect.exit(
            Effect.sync(() => {
              ran = true
            }).pipe(HttpBody.withDecompress(enabled as unknown as boolean))
          )
          const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
          assert.instanceOf(defect, Options.InvalidOptionsError)
          assert.strictEqual((defect as Options.InvalidOptionsError).option, "decompress")
        }
        assert.isFalse(ran)
      })
    )
  })

  describe("withMaxBodySize", () => {
    it.effect("fails with InvalidOptionsError for a size that is not an integer >= 1 or Infinity", () =>
      Effect.gen(function* () {
        for (const bytes of [0, -1, 0.5, Number.NaN, Number.NEGATIVE_INFINITY, Number.MAX_SAFE_INTEGER + 1]) {
          const error = yield* Effect.flip(Effect.void.pipe(HttpBody.withMaxBodySize(bytes)))
          assert.strictEqual(error._tag, "InvalidOptionsError", String(bytes))
        }
        assert.strictEqual(
          yield* HttpBody.MaxBodySize.pipe(HttpBody.withMaxBodySize(Number.POSITIVE_INFINITY)),
          Number.POSITIVE_INFINITY
        )
      })
    )
  })
})
