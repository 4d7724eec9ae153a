import type { IncomingMessage, ServerResponse } from "node:http"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Context, Effect, Fiber, Layer, Metric } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { heapAfterGc } from "../../../test/support/heap.ts"
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

const inFlight = (origin: string) =>
  Effect.map(Metric.value(Metric.withAttributes(metrics.inFlight, { origin })), (s) => s.value)

// An origin whose /slow requests hang until released; /fast answers at once.
const stalling = Effect.gen(function* () {
  const held: Array<() => void> = []
  const { url } = yield* origin({
    "/slow": (_: IncomingMessage, res: ServerResponse) => held.push(() => res.end("slow")),
    "/fast": (_: IncomingMessage, res: ServerResponse) => res.end("fast")
  })
  const get = (client: HttpClient.HttpClient, path: string) =>
    Effect.flatMap(client.execute(HttpClientRequest.get(`${url}${path}`)), (response) => response.text)
  /** Waits until the origin holds `n` requests. */
  const holding = (n: number) =>
    Effect.repeat(
      Effect.sync(() => held.length),
      { until: (length) => length >= n }
    )
  const release = Effect.sync(() => {
    for (const end of held) end()
  })
  return { url, get, holding, release }
})

// What `read` returns once it equals `expected`, or after 2 s (publication is every 100 ms).
const settled = <A>(read: Effect.Effect<A>, expected: A) =>
  Effect.gen(function* () {
    const until = Date.now() + 2000
    let value = yield* read
    while (Date.now() < until && JSON.stringify(value) !== JSON.stringify(expected)) {
      yield* Effect.sleep("20 millis")
      value = yield* read
    }
    return value
  })

const build = Effect.map(Layer.build(NodeHttpClient.layer()), Context.get(HttpClient.HttpClient))

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

    it.live(
      "keeps no meter for every origin it met: a crawler's client stays flat",
      () =>
        Effect.gen(function* () {
          // Origins met once each, refused at once (loopback addresses, a closed port), in a
          // registry of the test's own, emptied before each measure: the client's own state alone
          // (each origin's series in a registry are the registry's, see NodeHttpClient.metrics).
          const port = yield* closedPort
          const registry: Metric.MetricRegistry = new Map()
          const client = yield* build.pipe(Effect.provideService(Metric.MetricRegistry, registry))
          const visit = (from: number, count: number) =>
            Effect.forEach(
              Array.from({ length: count }, (_, i) => `http://127.9.${(from + i) >> 8}.${(from + i) & 255}:${port}/`),
              (url) => Effect.ignore(client.get(url)),
              { concurrency: 8, discard: true }
            )
          yield* visit(0, 1_000)
          registry.clear()
          const before = heapAfterGc()
          yield* visit(2_000, 4_000)
          // An origin met again after its meter was forgotten counts on in the same series.
          const again = `http://127.9.7.208:${port}`
          yield* Effect.ignore(client.get(`${again}/`))
          const counted = Effect.all([requests(again, "error"), inFlight(again)])
          assert.deepStrictEqual(yield* Effect.provideService(counted, Metric.MetricRegistry, registry), [2, 0])
          registry.clear()
          // A meter kept per origin was 3.3 KB: 13 MB here (0.3-0.5 MB now).
          assert.isBelow(heapAfterGc() - before, 2_000_000)
        }).pipe(Effect.scoped),
      { timeout: 60_000 }
    )

    it.live("counts in flight the requests of every client at an origin in one registry", () =>
      Effect.gen(function* () {
        const server = yield* stalling
        const [a, b] = [yield* build, yield* build]
        const slow = yield* Effect.forkChild(server.get(a, "/slow"))
        yield* server.holding(1)
        assert.strictEqual(yield* inFlight(server.url), 1)
        // B's last request in flight ends, and B publishes: A's is still open.
        yield* server.get(b, "/fast")
        const afterB = yield* inFlight(server.url)
        yield* server.release
        yield* Fiber.join(slow)
        assert.strictEqual(afterB, 1)
        assert.strictEqual(yield* inFlight(server.url), 0)
      }).pipe(Effect.scoped)
    )

    it.live("publishes the counters while requests stall, with no request starting or ending", () =>
      Effect.gen(function* () {
        const server = yield* stalling
        const client = yield* build
        const slow = yield* Effect.forkChild(
          Effect.all([server.get(client, "/slow"), server.get(client, "/slow"), server.get(client, "/slow")], {
            concurrency: 3
          })
        )
        yield* server.holding(3)
        yield* server.get(client, "/fast")
        const read = Effect.all({ inFlight: inFlight(server.url), ok: requests(server.url, "2xx") })
        const stalled = yield* settled(read, { inFlight: 3, ok: 1 })
        yield* server.release
        yield* Fiber.join(slow)
        assert.deepStrictEqual(stalled, { inFlight: 3, ok: 1 })
        assert.deepStrictEqual(yield* read, { inFlight: 0, ok: 4 })
      }).pipe(Effect.scoped)
    )

    it.live("stops counting a request interrupted while it waits for a connection", () =>
      Effect.gen(function* () {
        const server = yield* stalling
        const client = yield* Layer.build(
          Layer.merge(NodeHttpClient.layer({ connectionsPerOrigin: 1 }), Retry.layer({ retries: 0 }))
        ).pipe(Effect.map(Context.get(HttpClient.HttpClient)))
        const held = yield* Effect.forkChild(server.get(client, "/slow"))
        yield* server.holding(1)
        const queued = yield* Effect.forkChild(server.get(client, "/fast"))
        yield* Effect.sleep("100 millis")
        yield* Fiber.interrupt(queued)
        // It stayed counted until undici dropped it, when the connection freed (never, if it hangs).
        assert.strictEqual(yield* settled(inFlight(server.url), 1), 1)
        yield* server.release
        yield* Fiber.join(held)
      }).pipe(Effect.scoped)
    )
  })
})
