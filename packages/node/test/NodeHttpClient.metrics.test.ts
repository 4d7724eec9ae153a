import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Metric } from "effect"

// A node:http origin: /ok (2 bytes), /missing (404), /big (1 MB).
const origin = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<ReturnType<typeof createServer>>((resolve) => {
        const server = createServer((req, res) => {
          if (req.url === "/ok") return res.end("ok")
          if (req.url === "/big") return res.end(Buffer.alloc(1_000_000))
          res.writeHead(404).end("no")
        })
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
  ),
  (server) =>
    Effect.promise(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

const closedPort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = createServer()
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
)

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
        const url = yield* origin
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
