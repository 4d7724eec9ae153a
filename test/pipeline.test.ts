// HTTP -> blocking pipeline: bodies of a batch flow into worker threads (gunzip + parse + hash)
// with bounded work end to end. The CPU stage is slow on purpose; the test counts the bodies
// held at once (read, and not yet done with by the stage) and checks they never exceed
// `concurrency + buffer`, i.e. the slow stage throttled the fetching.
import { assert, describe, it } from "@effect/vitest"
import { Blocking, Fanout, Retry } from "@volley/core"
import { NodeBlocking, NodeHttpClient } from "@volley/node"
import { Effect, Layer, Stream } from "effect"
import type { HttpClientResponse } from "effect/http"
import { faultServer } from "./support/faultServer.ts"
import { digest } from "./support/pipelineTasks.ts"

const Live = Layer.mergeAll(
  NodeHttpClient.layer(),
  NodeBlocking.layer({ minWorkers: 2, maxWorkers: 2 }),
  Retry.layer({ retries: 0 })
)

describe("Fanout pipeline", () => {
  describe("pipeline", () => {
    it.live(
      "holds at most concurrency + buffer bodies when the CPU stage on worker threads is slow",
      () =>
        Effect.gen(function* () {
          const server = yield* faultServer
          const urls = Array.from({ length: 40 }, (_, i) => `${server.url}/json-gz?i=${i}&items=200`)
          let held = 0
          let maxHeld = 0
          let maxRequestsAhead = 0
          let processed = 0
          const read = (response: HttpClientResponse.HttpClientResponse) =>
            Effect.map(response.arrayBuffer, (buffer) => {
              held++
              maxHeld = Math.max(maxHeld, held)
              return new Uint8Array(buffer)
            })
          const results = yield* Fanout.pipeline(
            urls,
            (item) =>
              Blocking.run(digest, { body: item.value, minMillis: 15 }).pipe(
                Effect.ensuring(
                  Effect.sync(() => {
                    held--
                    processed++
                    maxRequestsAhead = Math.max(maxRequestsAhead, server.requests() - processed)
                  })
                )
              ),
            { concurrency: 4, buffer: 2, stageConcurrency: 2, read }
          ).pipe(Stream.runCollect)
          assert.strictEqual(results.length, 40)
          assert.deepStrictEqual(
            results.map((r) => r.value.i).sort((a, b) => a - b),
            Array.from({ length: 40 }, (_, i) => i)
          )
          assert.isTrue(results.every((r) => r.value.items === 200 && r.value.sha256.length === 64))
          // The bound holds, and it was reached: fetching waited for the stage.
          assert.isAtMost(maxHeld, 6)
          assert.isAtMost(maxRequestsAhead, 6)
          assert.isAtLeast(maxHeld, 3)
        }).pipe(Effect.scoped, Effect.provide(Live)),
      { timeout: 30_000 }
    )

    it.live("keeps input order with ordered: true", () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const urls = Array.from({ length: 12 }, (_, i) => `${server.url}/json-gz?i=${i}&items=5`)
        const order = yield* Fanout.pipeline(urls, (item) => Blocking.run(digest, { body: item.value, minMillis: 1 }), {
          concurrency: 4,
          ordered: true
        }).pipe(
          Stream.map((r) => r.value.i),
          Stream.runCollect
        )
        assert.deepStrictEqual(
          order,
          Array.from({ length: 12 }, (_, i) => i)
        )
      }).pipe(Effect.scoped, Effect.provide(Live))
    )
  })
})
