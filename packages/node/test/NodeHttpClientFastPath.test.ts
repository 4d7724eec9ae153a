import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { assert, describe, it } from "@effect/vitest"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Fiber, References, type Scope, Stream, Tracer } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"

const exposeGc = (): (() => void) => {
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc")
}

const big = Buffer.alloc(1024 * 1024, 7)
// Exactly the size up to which a body is read before the response is handed over.
const atLimit = Buffer.alloc(64 * 1024, 3)

const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
  "/text": (_req, res) => res.writeHead(200, { "content-type": "text/plain", "x-tag": "a" }).end("hello"),
  "/json": (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end('{"id":1}'),
  "/missing": (_req, res) => res.writeHead(404).end("nope"),
  // No content-length: the response is handed over at the head, the body follows.
  "/chunked": (_req, res) => {
    res.writeHead(200)
    res.write("one,")
    setTimeout(() => res.end("two"), 10)
  },
  "/big": (_req, res) => res.writeHead(200, { "content-length": String(big.length) }).end(big),
  "/at-limit": (_req, res) => res.writeHead(200, { "content-length": String(atLimit.length) }).end(atLimit),
  "/echo": (req, res) => req.pipe(res.writeHead(200)),
  "/traceparent": (req, res) => res.writeHead(200).end(req.headers.traceparent ?? "none"),
  "/headers": (req, res) => res.writeHead(200).end(JSON.stringify(req.headers)),
  "/target": (req, res) => res.writeHead(200).end(req.url),
  "/stalled-body": (_req, res) => {
    res.writeHead(200, { "content-length": "10" }).write("12345")
  },
  "/hang": () => {},
  // Answered when the test calls `releaseHeld`.
  "/held": (_req, res) => {
    held.push(res)
  }
}

const held: Array<ServerResponse> = []
const releaseHeld = () => {
  for (const res of held.splice(0)) res.writeHead(200).end("held")
}

// A loopback origin that counts requests and open sockets.
const origin = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{
        url: string
        requests: () => number
        connections: () => number
        openSockets: () => number
        close: () => Promise<void>
      }>((resolve) => {
        let requests = 0
        let connections = 0
        const sockets = new Set<Socket>()
        const server = createServer((req, res) => {
          requests++
          const handler = routes[new URL(req.url ?? "/", "http://x").pathname]
          if (handler === undefined) res.writeHead(404).end()
          else handler(req, res)
        })
        server.on("connection", (socket) => {
          connections++
          sockets.add(socket)
          socket.on("close", () => sockets.delete(socket))
        })
        server.listen(0, "127.0.0.1", () =>
          resolve({
            url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
            requests: () => requests,
            connections: () => connections,
            openSockets: () => sockets.size,
            close: () =>
              new Promise((done) => {
                for (const s of sockets) s.destroy()
                server.close(() => done())
              })
          })
        )
      })
  ),
  (server) => Effect.promise(server.close)
)

const reasonOf = (exit: Exit.Exit<unknown, unknown>) => {
  assert.isTrue(Exit.isFailure(exit))
  const error = Exit.isFailure(exit) ? (Cause.squash(exit.cause) as { reason: { _tag: string; cause: unknown } }) : null
  return error?.reason as { _tag: string; cause: { code?: string } }
}

// A tracer that records (here: keeps nothing, but is not Effect's default one).
const recording = Tracer.make({ span: (options) => Tracer.nativeTracer.span(options) })

// The same behaviour traced (a recording tracer: Effect's generic HttpClient.make wrapper), at
// the defaults (no tracer configured: the fast path) and with tracing off (the fast path that
// batches take).
const modes = {
  traced: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provideService(self, Tracer.Tracer, recording),
  default: <A, E, R>(self: Effect.Effect<A, E, R>) => self,
  "tracing off": <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.provideService(self, HttpClient.TracerDisabledWhen, () => true)
}

describe("NodeHttpClient", () => {
  for (const [mode, apply] of Object.entries(modes)) {
    describe(`layer (${mode})`, () => {
      const run = <A, E>(self: Effect.Effect<A, E, HttpClient.HttpClient | Scope.Scope>) =>
        apply(self).pipe(
          Effect.scoped,
          Effect.provide(NodeHttpClient.layer({ bodyTimeout: "300 millis", headersTimeout: "300 millis" }))
        )

      it.live("returns status, headers, text and JSON", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const text = yield* client.get(`${server.url}/text`)
            assert.strictEqual(text.status, 200)
            assert.strictEqual(text.headers["x-tag"], "a")
            assert.strictEqual(yield* text.text, "hello")
            assert.strictEqual(yield* text.text, "hello")
            assert.deepStrictEqual(yield* Effect.flatMap(client.get(`${server.url}/json`), (r) => r.json), { id: 1 })
            assert.strictEqual((yield* client.get(`${server.url}/missing`)).status, 404)
          })
        )
      )

      it.live("sends a URL as the WHATWG parser resolves it and reports it without its fragment", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const host = server.url.slice("http://".length)
            const cases: ReadonlyArray<readonly [HttpClientRequest.HttpClientRequest, string]> = [
              [HttpClientRequest.get(`${server.url}/target?x=1&y=%2e`), "/target?x=1&y=%2e"],
              [HttpClientRequest.get(`HTTP://${host}/a/../target?`), "/target"],
              [HttpClientRequest.get(`http://${host}/%2e/target?q=a b#frag`), "/target?q=a%20b"],
              [HttpClientRequest.get(`${server.url}/target`, { urlParams: { a: "1" } }), "/target?a=1"]
            ]
            for (const [request, path] of cases) {
              const response = yield* client.execute(request)
              assert.strictEqual(yield* response.text, path, request.url)
              assert.strictEqual(response.request.url, request.url)
              const parsed = new URL(request.url)
              parsed.hash = ""
              if (request.urlParams.params.length === 0) assert.strictEqual(response.url, parsed.href)
            }
          })
        )
      )

      it.live("a request interrupted while queued for a connection never takes one", () =>
        apply(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const first = yield* Effect.forkChild(Effect.flatMap(client.get(`${server.url}/held`), (r) => r.text))
            while (server.requests() < 1) yield* Effect.sleep("5 millis")
            // The only connection is busy: these wait in undici's queue.
            const queued = yield* Effect.forEach(Array.from({ length: 5 }), () =>
              Effect.forkChild(client.get(`${server.url}/text`), { startImmediately: true })
            )
            yield* Effect.sleep("20 millis")
            yield* Effect.forEach(queued, Fiber.interrupt)
            releaseHeld()
            assert.strictEqual(yield* Fiber.join(first), "held")
            assert.strictEqual(yield* Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text), "hello")
            // Each cancelled request, given the connection in turn, destroyed it: 6 connections.
            assert.strictEqual(server.connections(), 1)
            assert.strictEqual(server.requests(), 2)
          })
        ).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer({ connectionsPerOrigin: 1 })))
      )

      it.live("reuses a finished response's connection: C callers sending back to back hold C connections", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const bodies = yield* Effect.forEach(
              Array.from({ length: 200 }),
              () => Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text),
              { concurrency: 8 }
            )
            assert.strictEqual(bodies.join(""), "hello".repeat(200))
            // No pool limit is set: a caller resumed before undici frees the connection
            // would open a new one (up to 16 here).
            assert.strictEqual(server.openSockets(), 8)
          })
        )
      )

      it.live("reads bodies without content-length and bodies past the buffer limit, as bytes or a stream", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            assert.strictEqual(yield* Effect.flatMap(client.get(`${server.url}/chunked`), (r) => r.text), "one,two")
            const limit = yield* Effect.flatMap(client.get(`${server.url}/at-limit`), (r) => r.arrayBuffer)
            assert.strictEqual(limit.byteLength, atLimit.length)
            const bytes = yield* Effect.flatMap(client.get(`${server.url}/big`), (r) => r.arrayBuffer)
            assert.strictEqual(bytes.byteLength, big.length)
            const streamed = yield* client.get(`${server.url}/big`).pipe(
              Effect.flatMap((r) =>
                Stream.runFold(
                  r.stream,
                  () => 0,
                  (n, chunk) => n + chunk.length
                )
              )
            )
            assert.strictEqual(streamed, big.length)
            const echoed = yield* HttpClientRequest.post(`${server.url}/echo`).pipe(
              HttpClientRequest.bodyText("ping"),
              client.execute,
              Effect.flatMap((r) => r.text)
            )
            assert.strictEqual(echoed, "ping")
          })
        )
      )

      it.live("refuses a second concurrent reader of one body with a DecodeError; the first gets it whole", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const response = yield* client.get(`${server.url}/chunked`)
            const first = yield* Effect.forkChild(response.text)
            yield* Effect.yieldNow
            const second = yield* Effect.exit(response.arrayBuffer)
            assert.strictEqual(reasonOf(second)._tag, "DecodeError")
            // Effect's traced wrapper aborts the request when any `stream` of it ends, even a
            // refused one, so a second streaming reader is only harmless on the fast path.
            if (mode !== "traced") {
              const streamed = yield* Effect.exit(Stream.runCollect(response.stream))
              assert.strictEqual(reasonOf(streamed)._tag, "DecodeError")
            }
            assert.strictEqual(yield* Fiber.join(first).pipe(Effect.timeout("2 seconds")), "one,two")
          })
        )
      )

      it.live("fails an invalid URL with an InvalidUrlError and a refused connection with a TransportError", () =>
        run(
          Effect.gen(function* () {
            const client = yield* HttpClient.HttpClient
            assert.strictEqual(
              reasonOf(yield* Effect.exit(client.get("http://exa mple.com:99999/")))._tag,
              "InvalidUrlError"
            )
            assert.strictEqual(reasonOf(yield* Effect.exit(client.get("http://127.0.0.1:1/")))._tag, "TransportError")
          })
        )
      )

      it.live("fails a stalled head with a TransportError and a stalled body with a DecodeError", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const head = reasonOf(yield* Effect.exit(client.get(`${server.url}/hang`)))
            assert.strictEqual(head._tag, "TransportError")
            assert.strictEqual(head.cause.code, "UND_ERR_HEADERS_TIMEOUT")
            const body = reasonOf(
              yield* Effect.exit(Effect.flatMap(client.get(`${server.url}/stalled-body`), (r) => r.text))
            )
            assert.strictEqual(body._tag, "DecodeError")
            assert.strictEqual(body.cause.code, "UND_ERR_BODY_TIMEOUT")
          })
        )
      )

      it.live("closes the socket when a request is interrupted, before the head or while the body streams", () =>
        run(
          Effect.gen(function* () {
            const server = yield* origin
            const client = yield* HttpClient.HttpClient
            const waitFor = (f: () => boolean) =>
              Effect.gen(function* () {
                while (!f()) yield* Effect.sleep("5 millis")
              })
            const head = yield* Effect.forkChild(client.get(`${server.url}/hang`))
            yield* waitFor(() => server.requests() === 1)
            yield* Fiber.interrupt(head)
            yield* waitFor(() => server.openSockets() === 0)
            const body = yield* Effect.forkChild(Effect.flatMap(client.get(`${server.url}/chunked`), (r) => r.text))
            yield* waitFor(() => server.requests() === 2)
            yield* Fiber.interrupt(body)
            yield* waitFor(() => server.openSockets() === 0)
            assert.strictEqual(server.openSockets(), 0)
          })
        )
      )
    })
  }

  describe("layer (tracing off)", () => {
    it.live("frees the connection of a response dropped with a large body unread", () =>
      Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        // 1 MiB: the body pauses at the buffer limit and would hold the only connection.
        yield* Effect.asVoid(client.get(`${server.url}/big`))
        let text: string | undefined
        const next = yield* Effect.forkChild(
          Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text).pipe(
            Effect.tap((t) =>
              Effect.sync(() => {
                text = t
              })
            )
          )
        )
        const gc = exposeGc()
        for (let i = 0; i < 100 && text === undefined; i++) {
          gc()
          yield* Effect.sleep("20 millis")
        }
        yield* Fiber.interrupt(next)
        assert.strictEqual(text, "hello")
      }).pipe(
        Effect.provideService(HttpClient.TracerDisabledWhen, () => true),
        Effect.scoped,
        Effect.provide(NodeHttpClient.layer({ connectionsPerOrigin: 1, bodyTimeout: "60 seconds" }))
      )
    )
  })

  describe("tracing", () => {
    it.live(
      "asks TracerDisabledWhen about every request, with no tracer configured too, as Effect's client does",
      () => {
        const asked: Array<string> = []
        const predicate = function (this: unknown, request: HttpClientRequest.HttpClientRequest) {
          asked.push(`${request.method} ${this === undefined ? "" : "with this"}`)
          return false
        }
        return Effect.gen(function* () {
          const server = yield* origin
          const client = yield* HttpClient.HttpClient
          yield* Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text)
          const streamed = HttpClientRequest.post(`${server.url}/echo`).pipe(
            HttpClientRequest.bodyStream(Stream.make(new Uint8Array([1])))
          )
          yield* Effect.flatMap(client.execute(streamed), (r) => r.text)
          // The streamed one takes the traced path, where Effect's client asks again.
          assert.deepStrictEqual([...new Set(asked)], ["GET ", "POST "])
        }).pipe(
          Effect.provideService(HttpClient.TracerDisabledWhen, predicate),
          Effect.scoped,
          Effect.provide(NodeHttpClient.layer())
        )
      }
    )

    it.live("records a client span unless tracing is off for the request", () => {
      const names: Array<string> = []
      const tracer = Tracer.make({
        span(options) {
          names.push(options.name)
          return Tracer.nativeTracer.span(options)
        }
      })
      return Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        yield* Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text)
        assert.strictEqual(names.length, 1)
        assert.include(names[0], "GET")
        yield* Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text).pipe(
          Effect.provideService(HttpClient.TracerDisabledWhen, () => true)
        )
        assert.strictEqual(names.length, 1)
        yield* Effect.flatMap(client.get(`${server.url}/text`), (r) => r.text).pipe(
          Effect.provideService(References.TracerEnabled, false)
        )
        assert.strictEqual(names.length, 1)
      }).pipe(Effect.provideService(Tracer.Tracer, tracer), Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    })

    it.live("with Effect's default tracer, sends the enclosing span's trace context, and none outside a span", () =>
      Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        const get = Effect.flatMap(client.get(`${server.url}/traceparent`), (r) => r.text)
        assert.strictEqual(yield* get, "none")
        const [sent, span] = yield* Effect.all([get, Effect.currentSpan]).pipe(Effect.withSpan("caller"))
        assert.strictEqual(sent, `00-${span.traceId}-${span.spanId}-01`)
        // The header names the caller's trace; no client span of its own was made.
        assert.isTrue(span.traceId.length === 32)
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )

    it.live("sends the span's trace context over the request's own headers, with its Accept-Encoding", () =>
      Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        const sent = (request: HttpClientRequest.HttpClientRequest) =>
          Effect.flatMap(client.execute(request), (r) => r.json) as Effect.Effect<Record<string, string>, unknown>
        const own = HttpClientRequest.get(`${server.url}/headers`).pipe(
          HttpClientRequest.setHeaders({ "x-own": "1", traceparent: "00-stale-stale-00" })
        )
        const [first, second, plain, span] = yield* Effect.all([
          sent(own),
          sent(own),
          sent(HttpClientRequest.get(`${server.url}/headers`)),
          Effect.currentSpan
        ]).pipe(Effect.withSpan("caller"))
        const traceparent = `00-${span.traceId}-${span.spanId}-01`
        assert.deepInclude(first, { "x-own": "1", traceparent, b3: `${span.traceId}-${span.spanId}-1` })
        assert.match(first["accept-encoding"]!, /gzip/)
        assert.deepStrictEqual(second, first)
        assert.deepInclude(plain, { traceparent, b3: `${span.traceId}-${span.spanId}-1` })
        assert.match(plain["accept-encoding"]!, /gzip/)
        // Outside the span: the request's own headers only.
        assert.strictEqual((yield* sent(own)).traceparent, "00-stale-stale-00")
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )

    it.live("sends each request's own headers when requests built from different templates alternate", () =>
      Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        const sent = (request: HttpClientRequest.HttpClientRequest) =>
          Effect.flatMap(client.execute(request), (r) => r.json) as Effect.Effect<Record<string, string>, unknown>
        const a = HttpClientRequest.get(`${server.url}/headers`).pipe(HttpClientRequest.setHeader("x-tag", "a"))
        const b = HttpClientRequest.get(`${server.url}/headers`).pipe(HttpClientRequest.setHeader("x-tag", "b"))
        const own = HttpClientRequest.setHeader(b, "accept-encoding", "identity")
        const tags = []
        for (const request of [a, a, b, a, own, b, HttpClientRequest.get(`${server.url}/headers`), a]) {
          const headers = yield* sent(request)
          tags.push(
            `${headers["x-tag"] ?? "-"}:${/gzip/.test(headers["accept-encoding"] ?? "") ? "gzip" : headers["accept-encoding"]}`
          )
        }
        assert.deepStrictEqual(tags, [
          "a:gzip",
          "a:gzip",
          "b:gzip",
          "a:gzip",
          "b:identity",
          "b:gzip",
          "-:gzip",
          "a:gzip"
        ])
        // In a span, the same template carries the span's trace context too; outside, not.
        const [traced, span] = yield* Effect.all([sent(a), Effect.currentSpan]).pipe(Effect.withSpan("caller"))
        assert.deepInclude(traced, { "x-tag": "a", traceparent: `00-${span.traceId}-${span.spanId}-01` })
        assert.isUndefined((yield* sent(a)).traceparent)
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )

    it.live("with tracing off for a request (as a batch sets it), still sends the enclosing span's trace context", () =>
      Effect.gen(function* () {
        const server = yield* origin
        const client = yield* HttpClient.HttpClient
        const get = Effect.flatMap(client.get(`${server.url}/traceparent`), (r) => r.text)
        const [sent, span] = yield* Effect.all([get, Effect.currentSpan]).pipe(
          Effect.provideService(HttpClient.TracerDisabledWhen, () => true),
          Effect.withSpan("caller"),
          Effect.provideService(Tracer.Tracer, recording)
        )
        // It sent none: the origin's spans started a trace of their own.
        assert.strictEqual(sent, `00-${span.traceId}-${span.spanId}-01`)
        // Tracer.DisablePropagation still turns it off.
        assert.strictEqual(
          yield* get.pipe(Effect.provideService(Tracer.DisablePropagation, true), Effect.withSpan("c")),
          "none"
        )
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )
  })
})
