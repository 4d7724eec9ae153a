// Compressed bodies from a real nginx (`gzip on`, and `brotli on` with Debian's
// libnginx-mod-http-brotli-filter): decoded by default in Http.* and batches, raw when off.
import { existsSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, HttpBody } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit } from "effect"
import { BROTLI_MODULE, logWith, nginx } from "./support/nginx.ts"

const PAGE = `<html><body>${"<p>volley reads compressed pages</p>\n".repeat(2_000)}</body></html>`

// Without the brotli module nginx would refuse its directives: leave them out then.
const brotli = existsSync(BROTLI_MODULE)
const locations = `
  gzip on; gzip_types text/plain text/html application/json; gzip_min_length 20;
  location = /page.html { root @WWW@; ${brotli ? "brotli off;" : ""} }
  ${brotli ? "location = /br/page.html { alias @WWW@/page.html; brotli on; brotli_types text/html; }" : ""}
  location = /corrupt { default_type text/plain; gzip off; add_header Content-Encoding gzip; return 200 "this is not gzip"; }
`

describe("NodeHttpClient against nginx", () => {
  it.live("decodes nginx's gzip in Http.* and in a batch", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations, { "page.html": PAGE })
      assert.strictEqual(yield* Http.getText(`${server.http}/page.html`), PAGE)
      const batch = yield* Fanout.all(
        Array.from({ length: 8 }, () => `${server.http}/page.html`),
        { read: (res) => res.text }
      )
      assert.deepStrictEqual(batch, Array(8).fill(PAGE))
      const log = yield* logWith(server, 9)
      assert.deepStrictEqual(
        log.map((line) => line.encoding),
        Array(9).fill("gzip")
      )
      assert.isBelow(log[0]!.bodyBytes, PAGE.length / 10, "nginx sent it compressed")
    }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
  )

  it.live("decodes nginx's brotli (Debian's brotli filter module)", () =>
    Effect.gen(function* () {
      assert.isTrue(brotli, "libnginx-mod-http-brotli-filter is missing (scripts/provision.sh installs it)")
      const server = yield* nginx(locations, { "page.html": PAGE })
      assert.strictEqual(yield* Http.getText(`${server.http}/br/page.html`), PAGE)
      const log = yield* logWith(server, 1)
      assert.strictEqual(log[0]?.encoding, "br")
    }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
  )

  it.live("sends no Accept-Encoding with decompress off, so nginx answers uncompressed", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations, { "page.html": PAGE })
      assert.strictEqual(
        yield* Http.getText(`${server.http}/page.html`).pipe(
          Effect.provide(NodeHttpClient.layer({ decompress: false }))
        ),
        PAGE
      )
      // A batch that turns it off over a layer that has it on.
      yield* Fanout.all([`${server.http}/page.html`]).pipe(
        HttpBody.withDecompress(false),
        Effect.provide(NodeHttpClient.layer())
      )
      const log = yield* logWith(server, 2)
      assert.deepStrictEqual(
        log.map((line) => line.encoding),
        ["-", "-"]
      )
    }).pipe(Effect.scoped)
  )

  it.live("fails a body nginx labels gzip but is not with a DecodeError naming the request", () =>
    Effect.gen(function* () {
      const server = yield* nginx(locations)
      const exit = yield* Effect.exit(Http.getText(`${server.http}/corrupt`))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit)
        ? (Cause.squash(exit.cause) as Error & { reason?: { _tag: string } })
        : undefined
      assert.strictEqual(error?.reason?._tag, "DecodeError")
      assert.include(error?.message, `gzip body does not decode`)
      assert.include(error?.message, `GET ${server.http}/corrupt`)
    }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
  )
})
