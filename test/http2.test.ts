// HTTP/2 on the direct client, against a real nginx (`listen ... ssl http2`, a test CA): opt-in,
// one connection per origin for a whole batch, the same timeouts and interruption.
import { existsSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer } from "effect"
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
