import type { AddressInfo } from "node:net"
import { createServer, type Socket } from "node:net"
import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Http, HttpBody, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Exit, Layer, Stream } from "effect"
import { HttpClient } from "effect/http"

// A raw TCP origin answering every request with `head` and `body` in one write, then closing.
const rawOrigin = (response: Buffer) =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<{ server: ReturnType<typeof createServer>; sockets: Set<Socket> }>((resolve) => {
          const sockets = new Set<Socket>()
          const server = createServer((socket) => {
            sockets.add(socket)
            socket.on("close", () => sockets.delete(socket))
            socket.on("error", () => {})
            socket.once("data", () => socket.end(response))
          })
          server.listen(0, "127.0.0.1", () => resolve({ server, sockets }))
        })
    ),
    ({ server, sockets }) =>
      Effect.promise(() => {
        for (const socket of sockets) socket.destroy()
        return new Promise<void>((resolve) => server.close(() => resolve()))
      })
  ).pipe(Effect.map(({ server }) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

// A gzip body sent as HTTP/1.1 chunks of one byte each (6 bytes on the wire per byte of body).
const byteChunked = (body: Buffer): Buffer =>
  Buffer.concat([
    Buffer.from("HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
    ...Array.from(body, (byte) => Buffer.from([0x31, 0x0d, 0x0a, byte, 0x0d, 0x0a])),
    Buffer.from("0\r\n\r\n")
  ])

describe("Body", () => {
  // Found by review: each wire chunk went to the decoder in a write of its own, a round trip to
  // zlib's thread (25-60 µs) however small: an origin sending its gzip body in chunks of one byte
  // cost 10 µs of CPU per byte on the wire, 14 times the same body unencoded (300 KB: 3 s), and
  // maxBodySize, counting decoded bytes, did not bound it. Chunks that arrive while the decoder
  // is busy now go to it together.
  it.live("hands the decoder the chunks that arrived while it was busy in one write", () =>
    Effect.gen(function* () {
      const text = "volley ".repeat(3_000)
      const gzip = Zlib.gzipSync(text, { level: 0 })
      const url = yield* rawOrigin(byteChunked(gzip))
      const Gunzip = Object.getPrototypeOf(Zlib.createGunzip()) as {
        _transform: (chunk: Buffer, encoding: BufferEncoding, done: () => void) => void
      }
      let writes = 0
      // An own `_transform` over the inherited one, counting gunzip's writes; removed after.
      Gunzip._transform = function (this: unknown, chunk, encoding, done) {
        writes++
        return Object.getPrototypeOf(Gunzip)._transform.call(this, chunk, encoding, done)
      }
      const decoded = yield* Http.getText(url).pipe(
        Effect.ensuring(Effect.sync(() => delete (Gunzip as { _transform?: unknown })._transform))
      )
      assert.strictEqual(decoded, text)
      // A few socket reads' worth, not one write per byte (21,000 and more).
      assert.isBelow(writes, 100, `${writes} writes for ${gzip.length} chunks`)
    }).pipe(Effect.provide(Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))), Effect.scoped)
  )

  // Found by review: a stream of an encoded body that had already ended failed on its wire bytes
  // (past the bound of its read's maxBodySize) though it decoded to a few bytes, which a text read
  // under the same limit returned; and it marked the body failed for good, as no read over the
  // limit of a complete body does.
  it.live("a body that has ended is judged by its decoded bytes, not its wire bytes", () =>
    Effect.gen(function* () {
      // 5 bytes decoded from 4 KiB on the wire (empty members before them).
      const gzip = Buffer.concat([...Array.from({ length: 200 }, () => Zlib.gzipSync("")), Zlib.gzipSync("hello")])
      const head = `HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: ${gzip.length}\r\nconnection: close\r\n\r\n`
      const url = yield* rawOrigin(Buffer.concat([Buffer.from(head), gzip]))
      const response = yield* (yield* HttpClient.HttpClient).get(url)
      // Read in full, so the body has ended before the stream starts.
      assert.strictEqual(yield* response.text, "hello")
      const streamed = response.stream.pipe(Stream.decodeText, Stream.mkString, HttpBody.withMaxBodySize(100))
      assert.deepStrictEqual(yield* Effect.exit(streamed), Exit.succeed("hello"))
    }).pipe(Effect.provide(Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))), Effect.scoped)
  )
})
