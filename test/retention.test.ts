// What a finished call or batch leaves reachable: nothing of it. The client and `Http.*` cache what
// they read of the last context they ran in (see NodeHttpClient's FastRefs, Http's RunServices).
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Context, Effect, Layer } from "effect"
import { heapAfterGc } from "./support/heap.ts"
import { origin } from "./support/origin.ts"

const BODY = Buffer.alloc(64 * 1024, "x")

// The JS heap and the memory of ArrayBuffers (bodies read as bytes), after full collections.
const memory = () => heapAfterGc() + process.memoryUsage().arrayBuffers

class Ballast extends Context.Service<Ballast, { readonly bytes: Uint8Array }>()("test/Ballast") {}

describe("retention", () => {
  // Found by review: a batch provides a TracerDisabledWhen made in its own scope, which V8 shares
  // with its sink; the client kept its last context's references (that function among them) until
  // a request in another context came, and with them every result of the batch: 13 MB here.
  it.live("a finished batch's results are not kept by its client", () =>
    Effect.gen(function* () {
      const server = yield* origin({ "/big": (_req, res) => res.end(BODY) })
      const urls = Array.from({ length: 200 }, () => `${server.url}/big`)
      yield* Fanout.allSettled(urls.slice(0, 10), { concurrency: 8 })
      const before = memory()
      // Counted, not kept: the test itself holds none of the results.
      const succeeded = yield* Effect.map(
        Fanout.allSettled(urls, { concurrency: 8 }),
        (results) => results.filter((result) => result._tag === "Success").length
      )
      assert.strictEqual(succeeded, 200)
      // Resumed on a fresh stack: the step that ran the batch no longer holds its value.
      yield* Effect.yieldNow
      assert.isBelow(memory() - before, 4_000_000)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  // Found by review: `Http.*` kept the last context it ran in (for its services) until a call in
  // another context came: that context and all it holds (a request handler's services) lived on.
  it.live("the context an Http call ran in is not kept after it", () =>
    Effect.gen(function* () {
      const server = yield* origin({ "/ok": (_req, res) => res.end("ok") })
      const client = yield* Layer.build(NodeHttpClient.layer())
      const call = Http.getText(`${server.url}/ok`).pipe(Effect.provide(client))
      yield* call
      const before = memory()
      // Made in the call's context only: the test itself holds none of it.
      const text = yield* Effect.provideServiceEffect(
        call,
        Ballast,
        Effect.sync(() => ({ bytes: new Uint8Array(16 * 1024 * 1024).fill(1) }))
      )
      assert.strictEqual(text, "ok")
      yield* Effect.yieldNow
      assert.isBelow(memory() - before, 4_000_000)
    }).pipe(Effect.scoped)
  )
})
