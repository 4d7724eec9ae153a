// The redirect policy's options and layers (following itself is tested against real origins in
// test/redirects.test.ts).
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit } from "effect"
import { Redirects } from "../src/index.ts"

const policyFrom = (env: Record<string, string>) =>
  Redirects.RedirectPolicy.pipe(
    Effect.provide(Redirects.layerConfig()),
    Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
  )

describe("Redirects", () => {
  describe("make", () => {
    it.effect("defaults to 10 hops, no downgrade, credentials dropped across origins", () =>
      Effect.gen(function* () {
        const policy = yield* Redirects.RedirectPolicy
        assert.strictEqual(policy.maxRedirects, 10)
        assert.isFalse(policy.allowDowngrade)
        assert.deepStrictEqual([...policy.sensitiveHeaders].sort(), ["authorization", "cookie", "proxy-authorization"])
      })
    )

    it.effect("adds marked headers in lower case, and refuses what is not a header name or a hop count", () =>
      Effect.gen(function* () {
        const policy = yield* Redirects.make({ maxRedirects: 0, sensitiveHeaders: ["X-Api-Key"] })
        assert.strictEqual(policy.maxRedirects, 0)
        assert.isTrue(policy.sensitiveHeaders.has("x-api-key"))
        for (const options of [{ maxRedirects: -1 }, { maxRedirects: Number.NaN }, { maxRedirects: 1.5 }]) {
          const error = yield* Effect.flip(Redirects.make(options))
          assert.strictEqual(error.option, "maxRedirects")
        }
        const header = yield* Effect.flip(Redirects.make({ sensitiveHeaders: ["x api key"] }))
        assert.strictEqual(header.option, "sensitiveHeaders")
        assert.include(header.message, '"x api key"')
      })
    )
    it.effect("refuses sensitiveHeaders that is not an array, a lone name included (it was taken per character)", () =>
      Effect.gen(function* () {
        for (const sensitiveHeaders of ["x-api-key", {}, 1, new Set(["x-api-key"])]) {
          const error = yield* Effect.flip(Redirects.make({ sensitiveHeaders: sensitiveHeaders as never }))
          assert.strictEqual(error._tag, "InvalidOptionsError")
          assert.strictEqual(error.option, "sensitiveHeaders")
          assert.include(error.message, "must be an array")
        }
        const exit = yield* Effect.exit(
          Effect.void.pipe(Redirects.withOptions({ sensitiveHeaders: "x-api-key" as never }))
        )
        assert.deepStrictEqual(exit.pipe(Exit.mapError((e) => e.option)), Exit.fail("sensitiveHeaders"))
        const options = yield* Effect.flip(Redirects.make(null as never))
        assert.strictEqual(options.option, "options")
      })
    )
  })

  describe("withOptions", () => {
    it.effect("sets the policy for one effect only, and fails it on a bad option", () =>
      Effect.gen(function* () {
        const inner = yield* Redirects.RedirectPolicy.pipe(Redirects.withOptions({ maxRedirects: 2 }))
        assert.strictEqual(inner.maxRedirects, 2)
        assert.strictEqual((yield* Redirects.RedirectPolicy).maxRedirects, 10)
        const exit = yield* Effect.exit(Effect.void.pipe(Redirects.withOptions({ maxRedirects: -1 })))
        assert.isTrue(Exit.isFailure(exit))
      })
    )
  })

  describe("layerConfig", () => {
    it.effect("reads VOLLEY_REDIRECT_* and keeps the defaults of unset keys", () =>
      Effect.gen(function* () {
        const policy = yield* policyFrom({
          VOLLEY_REDIRECT_MAX: "3",
          VOLLEY_REDIRECT_ALLOW_DOWNGRADE: "true",
          VOLLEY_REDIRECT_SENSITIVE_HEADERS: "x-api-key,X-Tenant"
        })
        assert.strictEqual(policy.maxRedirects, 3)
        assert.isTrue(policy.allowDowngrade)
        assert.isTrue(policy.sensitiveHeaders.has("x-api-key") && policy.sensitiveHeaders.has("x-tenant"))
        assert.strictEqual((yield* policyFrom({})).maxRedirects, 10)
        const bad = yield* Effect.flip(policyFrom({ VOLLEY_REDIRECT_MAX: "-3" }))
        assert.strictEqual(bad._tag, "InvalidOptionsError")
        // It names the variable, as the other layerConfigs do.
        assert.include(bad.message, "maxRedirects")
        assert.include(bad.message, "(VOLLEY_REDIRECT_MAX)")
      })
    )
  })
})
