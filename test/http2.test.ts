// HTTP/2 on the direct client, against a real nginx (`listen ... ssl http2`, a test CA): opt-in,
// one connection per origin for a whole batch, the same timeouts and interruption; and against a
// node:http2 origin, which shows what reached it: an interruption as its stream's reset, a
// streamed upload.
import { existsSync } from "node:fs"
import { createSecureServer, type Http2Session } from "node:http2"
import type { AddressInfo } from "node:net"
import { zstdCompressSync } from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { HttpClientRequest } from "effect/http"
import { makePki } from "../packages/node/test/fixtures/pki.ts"
import { logWith, nginx } from "./support/nginx.ts"

const hasEcho = existsSync("/usr/lib/nginx/modules/ngx_http_echo_module.so")
const PAGE = "<p>over one connection</p>\n".repeat(500)
const locations = `
  gzip on; gzip_types text/html; gzip_min_length 20;
  location = /ok { default_type text/plain; return 200 "ok"; }
  location = /page.html { root @WWW@; }
  ${hasEcho ? `location = /sleep { default_type text/plain; echo_sleep 2; echo "slept"; }` : ""}
`

const client = (ca: string, options: NodeHttpClient.Options = {}) =>
  Layer.merge(NodeHttpClient.layer({ tls: { ca }, ...options }), Retry.layer({ retries: 0 }))

const connections = (lines: ReadonlyArray<{ readonly connection: string }>) =>
  new Set(lines.map((line) => line.connection)).size

// A node:http2 TLS origin (the test PKI): /ok answers, /echo answers with the request's body in
// zstd, /hang never answers. It tells when the
// /hang stream opened and when it closed (and whether it had answered), and counts sessions
// opened and closed, so a test sees a cancellation reach it as that stream's reset alone.
const h2Origin = Effect.acquireRelease(
  Effect.sync(() => {
    const pki = makePki()
    const sessions = new Set<Http2Session>()
    let opened = 0
    let closed = 0
    let hangOpened: () => void = () => {}
    let hangClosed: (answered: boolean) => void = () => {}
    const hangStarted = new Promise<void>((resolve) => (hangOpened = resolve))
    const hangEnded = new Promise<boolean>((resolve) => (hangClosed = resolve))
    const server = createSecureServer({ key: pki.serverKey, cert: pki.serverCert })
    server.on("session", (session) => {
      opened++
      sessions.add(session)
      session.on("close", () => {
        closed++
        sessions.delete(session)
      })
    })
    server.on("stream", (stream, headers) => {
      if (headers[":path"] === "/ok") {
        stream.respond({ ":status": 200 })
        return stream.end("ok")
      }
      if (headers[":path"] === "/slow") {
        const timer = setTimeout(() => {
          if (stream.closed) return
          stream.respond({ ":status": 200 })
          stream.end("ok")
        }, 300)
        return stream.on("close", () => clearTimeout(timer))
      }
      if (headers[":path"] === "/echo") {
        const chunks: Array<Buffer> = []
        stream.on("data", (chunk: Buffer) => chunks.push(chunk))
        return stream.on("end", () => {
          stream.respond({ ":status": 200, "content-encoding": "zstd" })
          stream.end(zstdCompressSync(Buffer.concat(chunks)))
        })
      }
      stream.on("close", () => hangClosed(stream.headersSent))
      hangOpened()
    })
    return { pki, server, sessions, counts: () => ({ opened, closed }), hangStarted, hangEnded }
  }).pipe(
    Effect.tap(({ server }) =>
      Effect.promise(() => new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve)))
    )
  ),
  ({ server, sessions }) =>
    Effect.promise(() => {
      for (const session of sessions) session.destroy()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
).pipe(
  Effect.map((origin) => ({
    ...origin,
    url: `https://localhost:${(origin.server.address() as AddressInfo).port}`
  }))
)

describe("NodeHttpClient http2", () => {
  it.live("multiplexes a batch of 64 to one HTTP/2 origin over one connection", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations)
      const urls = Array.from({ length: 64 }, () => `${server.https}/ok`)
      const bodies = yield* Fanout.all(urls, { concurrency: 64, read: (res) => res.text }).pipe(
        Effect.provide(client(server.ca, { http2: true }))
      )
      assert.deepStrictEqual(bodies, Array(64).fill("ok"))
      const log = yield* logWith(server, 64)
      assert.deepStrictEqual([...new Set(log.map((line) => line.protocol))], ["HTTP/2.0"])
      assert.strictEqual(connections(log), 1)
    }).pipe(Effect.scoped)
  )

  it.live("is opt-in: without http2 the same batch is HTTP/1.1 over several connections", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations)
      const urls = Array.from({ length: 64 }, () => `${server.https}/ok`)
      yield* Fanout.all(urls, { concurrency: 16 }).pipe(Effect.provide(client(server.ca)))
      const log = yield* logWith(server, 64)
      assert.deepStrictEqual([...new Set(log.map((line) => line.protocol))], ["HTTP/1.1"])
      assert.isAbove(connections(log), 1)
    }).pipe(Effect.scoped)
  )

  it.live("decodes compressed bodies over HTTP/2", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations, { "page.html": PAGE })
      const page = yield* Http.getText(`${server.https}/page.html`).pipe(
        Effect.provide(client(server.ca, { http2: true }))
      )
      assert.strictEqual(page, PAGE)
      const log = yield* logWith(server, 1)
      assert.deepStrictEqual(
        log.map((line) => [line.protocol, line.encoding]),
        [["HTTP/2.0", "gzip"]]
      )
    }).pipe(Effect.scoped)
  )

  it.live("applies headersTimeout to an HTTP/2 stream", () =>
    Effect.gen(function* () {
      assert.isTrue(hasEcho, "libnginx-mod-http-echo is missing (scripts/provision.sh installs it)")
      const server = yield* nginx(locations)
      const exit = yield* Effect.exit(
        Http.getText(`${server.https}/sleep`).pipe(
          Effect.provide(client(server.ca, { http2: true, headersTimeout: "200 millis" }))
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit)
        ? (Cause.squash(exit.cause) as { reason?: { _tag: string; cause?: unknown } })
        : {}
      assert.strictEqual(error.reason?._tag, "TransportError")
      assert.strictEqual((error.reason?.cause as { code?: string } | undefined)?.code, "UND_ERR_HEADERS_TIMEOUT")
    }).pipe(Effect.scoped)
  )

  it.live("interrupting an HTTP/2 request resets its stream at the origin, not the connection", () =>
    Effect.gen(function* () {
      const origin = yield* h2Origin
      yield* Effect.gen(function* () {
        assert.strictEqual(yield* Http.getText(`${origin.url}/ok`), "ok")
        const hanging = yield* Effect.forkChild(Http.getText(`${origin.url}/hang`))
        yield* Effect.promise(() => origin.hangStarted)
        yield* Fiber.interrupt(hanging)
        // The origin sees the unanswered stream closed while its session stays open (without
        // the reset the stream would stay open until the session closes at the end of the test).
        assert.isFalse(yield* Effect.promise(() => origin.hangEnded))
        assert.deepStrictEqual(origin.counts(), { opened: 1, closed: 0 })
        assert.strictEqual(yield* Http.getText(`${origin.url}/ok`), "ok")
        assert.deepStrictEqual(origin.counts(), { opened: 1, closed: 0 })
      }).pipe(Effect.provide(client(origin.pki.ca, { http2: true })))
    }).pipe(Effect.scoped)
  )

  it.live("sends a streamed body over HTTP/2 and decodes the answer", () =>
    Effect.gen(function* () {
      const origin = yield* h2Origin
      const upload = "over one stream ".repeat(10_000)
      const request = HttpClientRequest.post(`${origin.url}/echo`).pipe(
        HttpClientRequest.bodyStream(Stream.make(upload, upload).pipe(Stream.encodeText))
      )
      const echoed = yield* Http.send(request, (res) => res.text).pipe(
        Effect.provide(client(origin.pki.ca, { http2: true }))
      )
      assert.strictEqual(echoed, upload + upload)
    }).pipe(Effect.scoped)
  )

  it.live("drops request headers HTTP/2 forbids, which failed every request on the connection", () =>
    Effect.gen(function* () {
      const origin = yield* h2Origin
      const get = (headers: Record<string, string>) => Http.getText(`${origin.url}/slow`, { headers })
      // The last two are sent while the first two are in flight on the one connection: undici
      // destroyed it (node:http2 throws on them), failing the others too, and retried them.
      const bodies = yield* Effect.all(
        [
          get({}),
          get({}),
          Effect.delay(get({ te: "gzip" }), "50 millis"),
          Effect.delay(get({ "proxy-connection": "keep-alive" }), "50 millis"),
          Effect.delay(get({ te: "Trailers" }), "50 millis"),
          Effect.delay(get({ "http2-settings": "AAMAAABkAAQAoAAAAAIAAAAA" }), "50 millis")
        ],
        { concurrency: 6 }
      ).pipe(Effect.provide(client(origin.pki.ca, { http2: true })))
      assert.deepStrictEqual(bodies, ["ok", "ok", "ok", "ok", "ok", "ok"])
      assert.strictEqual(origin.counts().opened, 1)
    }).pipe(Effect.scoped)
  )

  it.live("an interrupted HTTP/2 request fails at once, and its connection carries the next requests", () =>
    Effect.gen(function* () {
      assert.isTrue(hasEcho, "libnginx-mod-http-echo is missing (scripts/provision.sh installs it)")
      const server = yield* nginx(locations)
      yield* Effect.gen(function* () {
        assert.strictEqual(yield* Http.getText(`${server.https}/ok`), "ok")
        const slow = yield* Effect.exit(Http.getText(`${server.https}/sleep`).pipe(Effect.timeout("100 millis")))
        assert.isTrue(Exit.isFailure(slow))
        assert.strictEqual(yield* Http.getText(`${server.https}/ok`), "ok")
      }).pipe(Effect.provide(client(server.ca, { http2: true })))
      // The requests before and after it shared one connection: interrupting a stream did not
      // close it (nginx logs the cancelled one only once its sleep ends).
      const log = yield* logWith(server, 2)
      assert.deepStrictEqual(
        log.filter((line) => line.uri === "/ok").map((line) => line.status),
        [200, 200]
      )
      assert.strictEqual(connections(log.filter((line) => line.uri === "/ok")), 1)
    }).pipe(Effect.scoped)
  )
})
