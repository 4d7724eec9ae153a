// HTTP -> blocking pipeline: bodies of a batch flow into worker threads (gunzip + parse + hash)
// with bounded work end to end. The CPU stage is slow on purpose; the test counts the bodies
// held at once (read, and not yet done with by the stage) and checks they never exceed
// `concurrency + buffer`, i.e. the slow stage throttled the fetching.
import { assert, describe, it } from "@effect/vitest"
import { Blocking, Fanout, Retry } from "@volley/core"
import { NodeBlocking, NodeHttpClient } from "@volley/node"
import { Effect, Layer, Result, Stream } from "effect"
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

  describe("pipelineSettled", () => {
    it.live(
      "keeps every item's outcome (failed requests, failed stages, successes) within the same bound",
      () =>
        Effect.gen(function* () {
          const server = yield* faultServer
          // i % 5 == 0: 404; i % 5 == 1: a body that is not gzip, so the stage throws on a thread
          const urls = Array.from({ length: 30 }, (_, i) =>
            i % 5 === 0
              ? `${server.url}/status?code=404&i=${i}`
              : i % 5 === 1
                ? `${server.url}/ok?i=${i}`
                : `${server.url}/json-gz?i=${i}&items=50`
          )
          let held = 0
          let maxHeld = 0
          const read = (response: HttpClientResponse.HttpClientResponse) =>
            Effect.map(response.arrayBuffer, (buffer) => {
              maxHeld = Math.max(maxHeld, ++held)
              return new Uint8Array(buffer)
            })
          const items = yield* Fanout.pipelineSettled(
            urls,
            (item) =>
              Blocking.run(digest, { body: item.value, minMillis: 10 }).pipe(
                Effect.ensuring(
                  Effect.sync(() => {
                    held--
                  })
                )
              ),
            { concurrency: 4, buffer: 2, stageConcurrency: 2, read }
          ).pipe(Stream.runCollect)
          const outcome = (item: (typeof items)[number]) =>
            Result.isSuccess(item.result)
              ? `ok:${item.result.success.i}`
              : item.result.failure._tag === "HttpClientError"
                ? `http:${item.result.failure.reason._tag}`
                : item.result.failure._tag
          const byIndex = new Map(items.map((item) => [item.index, outcome(item)]))
          assert.strictEqual(items.length, 30)
          for (let i = 0; i < 30; i++) {
            const expected = i % 5 === 0 ? "http:StatusCodeError" : i % 5 === 1 ? "HandlerError" : `ok:${i}`
            assert.strictEqual(byIndex.get(i), expected, `item ${i}`)
          }
          // a failed request never reaches the stage, yet every body counts against the window
          assert.isAtMost(maxHeld, 6)
        }).pipe(Effect.scoped, Effect.provide(Live)),
      { timeout: 30_000 }
    )
  })
})
