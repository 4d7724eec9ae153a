import type { IncomingMessage, ServerResponse } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Metric } from "effect"
import { closedPort, origin } from "../../../test/support/origin.ts"

// /ok (2 bytes), /missing (404, 2 bytes), /big (1 MB).
const routes = {
  "/ok": (_: IncomingMessage, res: ServerResponse) => res.end("ok"),
  "/missing": (_: IncomingMessage, res: ServerResponse) => res.writeHead(404).end("no"),
  "/big": (_: IncomingMessage, res: ServerResponse) => res.end(Buffer.alloc(1_000_000))
}

const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))
const { metrics } = NodeHttpClient

const requests = (origin: string, statusClass: string) =>
  Effect.map(
    Metric.value(Metric.withAttributes(metrics.requests, { origin, status_class: statusClass })),
    (s) => s.count
  )

describe("NodeHttpClient", () => {
  describe("metrics", () => {
    it.live("counts requests by origin and status class, body bytes and duration; none in flight after a batch", () =>
      Effect.gen(function* () {
        const { url } = yield* origin(routes)
        const refused = `http://127.0.0.1:${yield* closedPort}`
        const durationsBefore = (yield* Metric.value(metrics.duration)).count
        yield* Fanout.allSettled([
          ...Array.from({ length: 5 }, () => `${url}/ok`),
          `${url}/missing`,
          `${url}/big`,
          `${refused}/x`
        ])
        assert.strictEqual(yield* requests(url, "2xx"), 6)
        assert.strictEqual(yield* requests(url, "4xx"), 1)
        assert.strictEqual(yield* requests(refused, "error"), 1)
        assert.strictEqual((yield* Metric.value(Metric.withAttributes(metrics.inFlight, { origin: url }))).value, 0)
        const bytes = yield* Metric.value(Metric.withAttributes(metrics.bytesRead, { origin: url }))
        assert.strictEqual(bytes.count, 5 * 2 + 2 + 1_000_000)
        assert.strictEqual((yield* Metric.value(metrics.duration)).count - durationsBefore, 8)
      }).pipe(Effect.provide(Live), Effect.scoped)
    )
  })
})
