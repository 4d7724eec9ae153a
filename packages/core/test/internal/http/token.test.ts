// The one HTTP token check (RFC 9110 §5.6.2) behind the retry policy's `methods` and the redirect
// policy's `sensitiveHeaders`, held to Node's own header-name check.
import { validateHeaderName } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Redirects, Retry } from "@volley/core"
import { Effect, Exit, Layer } from "effect"
import { isToken } from "../../../src/internal/http/token.ts"

const nodeAccepts = (name: string): boolean => {
  try {
    validateHeaderName(name)
    return true
  } catch {
    return false
  }
}

describe("isToken", () => {
  // Found by review: the token grammar was written out in two places in core (retry methods,
  // redirect header names) that could drift apart; one check now serves both.
  it("accepts exactly the characters Node accepts in a header name, one by one and together", () => {
    for (let code = 0; code < 256; code++) {
      const c = String.fromCharCode(code)
      assert.strictEqual(isToken(c), nodeAccepts(c), `U+${code.toString(16).padStart(4, "0")}`)
    }
    assert.isTrue(isToken("X-Api-Key"))
    assert.isFalse(isToken(""))
    assert.isFalse(isToken("x-api-key "))
  })

  it.effect("is the check of the retry policy's methods and the redirect policy's header names", () =>
    Effect.gen(function* () {
      for (const value of ["PURGE", "M-SEARCH", "x.y", "a b", "GET\n", "é"]) {
        const methods = yield* Effect.exit(Retry.make({ methods: [value] }))
        const headers = yield* Effect.exit(
          Layer.build(Redirects.layer({ sensitiveHeaders: [value] })).pipe(Effect.scoped)
        )
        assert.strictEqual(Exit.isSuccess(headers), isToken(value), value)
        // Methods are trimmed and upper-cased first.
        assert.strictEqual(Exit.isSuccess(methods), isToken(value.trim().toUpperCase()), value)
      }
    })
  )
})
