import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, HttpBody } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Metric, Result, Stream } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { heapAfterGc } from "../../../test/support/heap.ts"

// The text every encoded route serves, large enough to span several chunks once decoded.
const TEXT = "volley decodes what it asks for. ".repeat(4_000)
const encoded: Record<string, Buffer> = {
  gzip: Zlib.gzipSync(TEXT),
  deflate: Zlib.deflateSync(TEXT),
  "deflate-raw": Zlib.deflateRawSync(TEXT),
  br: Zlib.brotliCompressSync(TEXT),
  zstd: Zlib.zstdCompressSync(TEXT),
  "gzip, br": Zlib.brotliCompressSync(Zlib.gzipSync(TEXT))
}
// TEXT in two halves, for a zstd body of two frames.
const HALVES = [TEXT.slice(0, TEXT.length / 2), TEXT.slice(TEXT.length / 2)]

// TEXT as a zstd frame whose header asks for a window of 2^exponent bytes (byte 5, the window
// descriptor of a frame without a content size; a larger window than the one compressed with
// still decodes), for RFC 9659's 8 MiB bound.
const zstdWindow = (exponent: number): Buffer => {
  const frame = Buffer.from(Zlib.zstdCompressSync(TEXT, { params: { [Zlib.constants.ZSTD_c_contentSizeFlag]: 0 } }))
  frame[5] = (exponent - 10) << 3
  return frame
}

// TEXT gzipped n times, for a Content-Encoding naming gzip n times.
const gzipped = (n: number): Buffer => (n === 0 ? Buffer.from(TEXT) : Zlib.gzipSync(gzipped(n - 1)))

interface Seen {
  readonly acceptEncoding: string | undefined
  readonly contentType: string | undefined
  readonly body: string
}

// A node:http origin: one route per coding, a corrupt gzip body, a 1 MB identity body, an encoded
// empty answer, and what each request asked for and sent (answered once its body is read).
const bodyOrigin = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{
        server: ReturnType<typeof createServer>
        seen: Array<Seen>
        closed: (n: number) => Promise<void>
      }>((resolve) => {
        const seen: Array<Seen> = []
        let closed = 0
        const waiters: Array<{ n: number; resolve: () => void }> = []
        const send = (res: ServerResponse, coding: string, body: Buffer) =>
          res.writeHead(200, { "content-encoding": coding, "content-length": body.length }).end(body)
        const server = createServer((req: IncomingMessage, res) => {
          const chunks: Array<Buffer> = []
          req.on("data", (chunk: Buffer) => chunks.push(chunk))
          req.on("end", () => {
            const { "accept-encoding": acceptEncoding, "content-type": contentType } = req.headers
            seen.push({ acceptEncoding, contentType, body: Buffer.concat(chunks).toString() })
            answer(req, res)
          })
        })
        const answer = (req: IncomingMessage, res: ServerResponse) => {
          const path = new URL(req.url ?? "/", "http://x").pathname.slice(1)
          if (path === "deflate-raw") return send(res, "deflate", encoded["deflate-raw"]!)
          if (path === "gzip-br") return send(res, "gzip, br", encoded["gzip, br"]!)
          if (path in encoded) return send(res, path, encoded[path]!)
          if (path === "corrupt") return send(res, "gzip", Buffer.from("this is not gzip at all"))
          if (path === "unknown-coding") return send(res, "aes128gcm", Buffer.from("opaque"))
          // Frames in a row (RFC 8878 §3), in one write: the first ends inside a chunk.
          if (path === "zstd-frames")
            return send(res, "zstd", Buffer.concat(HALVES.map((h) => Zlib.zstdCompressSync(h))))
          if (path === "zstd-held") {
            // Decoding to 70 kB (past a stream's 64 KiB mark), the wire held open.
            res.writeHead(200, { "content-encoding": "zstd" })
            res.write(Zlib.zstdCompressSync(Buffer.alloc(70_000, "a")))
            return void setTimeout(() => res.end(), 100)
          }
          if (path === "zstd-window-8m") return send(res, "zstd", zstdWindow(23))
          if (path === "zstd-window-128m") return send(res, "zstd", zstdWindow(27))
          if (path === "zstd-trailing")
            return send(res, "zstd", Buffer.concat([encoded.zstd!, Buffer.from("not a frame")]))
          if (path === "big") return res.writeHead(200, { "content-length": 1_000_000 }).end(Buffer.alloc(1_000_000))
          if (path === "ten") return res.writeHead(200, { "content-length": 10 }).end("0123456789")
          if (path === "corrupt-slow") {
            // Corrupt from its first bytes, and still arriving when its decoder fails.
            res.writeHead(200, { "content-encoding": "gzip" }).write("this is not gzip at all")
            return void setTimeout(() => res.end(), 1000)
          }
          if (path === "gzip-5" || path === "gzip-6") {
            const n = Number(path.slice(5))
            return send(res, Array(n).fill("gzip").join(", "), gzipped(n))
          }
          if (path === "empty-gzip") return res.writeHead(204, { "content-encoding": "gzip" }).end()
          res.writeHead(404).end()
        }
        server.on("connection", (socket: Socket) =>
          socket.on("close", () => {
            closed++
            for (const w of waiters.filter((w) => closed >= w.n)) w.resolve()
          })
        )
        // Resolves once the server has seen `n` connections close.
        const closedSockets = (n: number) =>
          closed >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))
        server.listen(0, "127.0.0.1", () => resolve({ server, seen, closed: closedSockets }))
      })
  ),
  ({ server }) =>
    Effect.promise(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
).pipe(
  Effect.map(({ server, seen, closed }) => ({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    closed
  }))
)

// The failure's fields these tests read (an HttpClientError or an InvalidOptionsError).
interface Failure {
  readonly _tag?: string
  readonly message: string
  readonly option?: string
  readonly reason?: { readonly _tag: string; readonly cause?: { readonly limit?: number } }
}

const squashed = (exit: Exit.Exit<unknown, unknown>): Failure | undefined =>
  Exit.isFailure(exit) ? (Cause.squash(exit.cause) as Failure) : undefined

// POSTs with a body undici cannot take as it is: a stream (sent chunked) and form data (sent as
// multipart with a field and a file).
const streamed = (url: string) =>
  HttpClientRequest.post(url).pipe(
    HttpClientRequest.bodyStream(Stream.make("streamed ", "upload").pipe(Stream.encodeText))
  )
const withForm = (url: string) => {
  const form = new FormData()
  form.append("name", "volley")
  form.append("file", new Blob(["file body"], { type: "text/plain" }), "notes.txt")
  return HttpClientRequest.post(url).pipe(HttpClientRequest.bodyFormData(form))
}
// What the origin received of a `withForm` request.
const isForm = (seen: Seen | undefined) =>
  seen !== undefined &&
  (seen.contentType ?? "").startsWith("multipart/form-data; boundary=") &&
  seen.body.includes('name="name"\r\n\r\nvolley') &&
  seen.body.includes('filename="notes.txt"') &&
  seen.body.includes("file body")
const text = (response: { readonly text: Effect.Effect<string, unknown> }) => response.text

describe("NodeHttpClient", () => {
  describe("decompress", () => {
    it.live("asks for gzip, deflate, br and zstd and decodes each (zlib and raw deflate, and a chain)", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        for (const path of ["gzip", "deflate", "deflate-raw", "br", "zstd", "gzip-br"]) {
          assert.strictEqual(yield* Http.getText(`${origin.url}/${path}`), TEXT, path)
        }
        assert.deepStrictEqual(
          origin.seen.map((s) => s.acceptEncoding),
          Array(6).fill("gzip, deflate, br, zstd")
        )
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("decodes in every Fanout form and in a streamed read", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const urls = ["gzip", "br", "zstd"].map((p) => `${origin.url}/${p}`)
        const texts = yield* Fanout.all(urls, { read: (res) => res.text })
        assert.deepStrictEqual(texts, [TEXT, TEXT, TEXT])
        const settled = yield* Fanout.allSettled(urls)
        assert.deepStrictEqual(
          settled.map((r) => (Result.isSuccess(r) ? Buffer.from(r.success).toString() : "failed")),
          [TEXT, TEXT, TEXT]
        )
        const streamed = yield* Fanout.stream(urls, { read: (res) => res.text }).pipe(Stream.runCollect)
        assert.deepStrictEqual(
          [...streamed].map((r) => r.value),
          [TEXT, TEXT, TEXT]
        )
        const client = yield* HttpClient.HttpClient
        const chunks = yield* client
          .get(`${origin.url}/gzip`)
          .pipe(Effect.flatMap((res) => Stream.runCollect(res.stream)))
        assert.strictEqual(Buffer.concat([...chunks]).toString(), TEXT)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("is off per layer (no Accept-Encoding, raw bytes) and switched per request either way", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const off = NodeHttpClient.layer({ decompress: false })
        const raw = yield* Http.getBytes(`${origin.url}/gzip`).pipe(Effect.provide(off))
        assert.deepStrictEqual(Buffer.from(raw), encoded.gzip)
        const onAgain = yield* Http.getText(`${origin.url}/gzip`).pipe(
          HttpBody.withDecompress(true),
          Effect.provide(off)
        )
        assert.strictEqual(onAgain, TEXT)
        const rawAgain = yield* Http.getBytes(`${origin.url}/br`).pipe(
          HttpBody.withDecompress(false),
          Effect.provide(NodeHttpClient.layer())
        )
        assert.deepStrictEqual(Buffer.from(rawAgain), encoded.br)
        assert.deepStrictEqual(
          origin.seen.map((s) => s.acceptEncoding),
          [undefined, "gzip, deflate, br, zstd", undefined]
        )
      }).pipe(Effect.scoped)
    )

    it.live("sends an Accept-Encoding the request sets as it is, and still decodes the answer", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const text = yield* Http.getText(`${origin.url}/gzip`, { headers: { "accept-encoding": "gzip" } })
        assert.strictEqual(text, TEXT)
        assert.strictEqual(origin.seen[0]?.acceptEncoding, "gzip")
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("hands over an unknown coding as it came, and an encoded answer without a body as empty", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        assert.strictEqual(yield* Http.getText(`${origin.url}/unknown-coding`), "opaque")
        const client = yield* HttpClient.HttpClient
        const response = yield* client.get(`${origin.url}/empty-gzip`)
        assert.strictEqual(response.status, 204)
        assert.strictEqual(yield* response.text, "")
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("decodes every frame of a zstd body, and fails bytes after its last frame with a DecodeError", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        assert.strictEqual(yield* Http.getText(`${origin.url}/zstd-frames`), TEXT)
        const client = yield* HttpClient.HttpClient
        const streamedText = yield* client
          .get(`${origin.url}/zstd-frames`)
          .pipe(Effect.flatMap((response) => Stream.mkString(Stream.decodeText(response.stream))))
        assert.strictEqual(streamedText, TEXT)
        const error = squashed(yield* Effect.exit(Http.getText(`${origin.url}/zstd-trailing`)))
        assert.strictEqual(error?.reason?._tag, "DecodeError")
        assert.include(error?.message, "zstd body does not decode")
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("decodes a zstd window of 8 MiB and refuses a larger one with a DecodeError (RFC 9659)", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        assert.strictEqual(yield* Http.getText(`${origin.url}/zstd-window-8m`), TEXT)
        // A 128 MiB window held ~128 MiB per response being decoded, whatever the body's size:
        // a 24 KB body streamed to its end grew RSS by 167 MiB.
        const client = yield* HttpClient.HttpClient
        const exit = yield* Effect.exit(
          client
            .get(`${origin.url}/zstd-window-128m`)
            .pipe(Effect.flatMap((response) => Stream.runDrain(response.stream)))
        )
        const error = squashed(exit)
        assert.strictEqual(error?.reason?._tag, "DecodeError")
        assert.include(error?.message, "zstd body does not decode")
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("reads a large zstd body in full when its reader starts late, the wire still open", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const client = yield* HttpClient.HttpClient
        // Read 30 ms after the head, as a caller doing something first would: the decoded output
        // piles up past the decoder's mark meanwhile, and its input waits for the reader.
        const late = Effect.flatMap(client.get(`${origin.url}/zstd-held`), (response) =>
          Effect.andThen(Effect.sleep("30 millis"), response.text)
        )
        const text = yield* late.pipe(Effect.timeout("5 seconds"))
        assert.strictEqual(text.length, 70_000)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("decodes a chain of 5 codings and refuses one of 6 with a DecodeError, decoding none of it", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        assert.strictEqual(yield* Http.getText(`${origin.url}/gzip-5`), TEXT)
        // Each coding is a zlib stream: a hostile origin may list thousands in one header.
        const error = squashed(yield* Effect.exit(Http.getText(`${origin.url}/gzip-6`)))
        assert.strictEqual(error?.reason?._tag, "DecodeError")
        assert.include(error?.message, "lists 6 codings, at most 5 are decoded")
        assert.strictEqual(origin.seen.length, 2, "not fetched again")
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("fails a corrupt gzip body with a DecodeError naming the request, its secrets redacted", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        // Redacted as Effect redacts URLs in its own errors (UrlParams.CurrentRedactedNames).
        const exit = yield* Effect.exit(Http.getText(`${origin.url}/corrupt?X-Amz-Signature=s3cret&page=2`))
        const error = squashed(exit)
        assert.strictEqual(error?.reason?._tag, "DecodeError")
        assert.include(error?.message, "gzip body does not decode")
        assert.include(error?.message, `GET ${origin.url}/corrupt?X-Amz-Signature=REDACTED&page=2`)
        assert.notInclude(error?.message, "s3cret")
        assert.strictEqual(origin.seen.length, 1, "a corrupt body is not fetched again")
        // A request whose body fails to decode is ended (counted, its connection closed) by the
        // time its reader sees the failure, even while the body is still arriving.
        const counted = Effect.map(
          Metric.value(
            Metric.withAttributes(NodeHttpClient.metrics.requests, { origin: origin.url, status_class: "2xx" })
          ),
          (state) => state.count
        )
        let countedWhenFailed = 0
        yield* Effect.exit(
          Http.send(HttpClientRequest.get(`${origin.url}/corrupt-slow`), (response) =>
            Effect.tapError(response.text, () => Effect.map(counted, (n) => (countedWhenFailed = n)))
          )
        )
        assert.strictEqual(countedWhenFailed, 2)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )
  })

  describe("streamed and form-data request bodies", () => {
    it.live("are sent as given and their answers decoded, in Http.send, every Fanout form and pipelines", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const url = (coding: string) => `${origin.url}/${coding}`
        assert.strictEqual(yield* Http.send(streamed(url("gzip")), text), TEXT)
        assert.strictEqual(yield* Http.send(withForm(url("zstd")), text), TEXT)
        // A Content-Type set on a form without its boundary gives way to the one undici writes.
        const typed = withForm(url("br")).pipe(HttpClientRequest.setHeader("content-type", "multipart/form-data"))
        assert.strictEqual(yield* Http.send(typed, text), TEXT)
        const both = () => [streamed(url("zstd")), withForm(url("gzip"))]
        assert.deepStrictEqual(yield* Fanout.all(both(), { read: text }), [TEXT, TEXT])
        const settled = yield* Fanout.allSettled(both())
        assert.deepStrictEqual(
          settled.map((r) => (Result.isSuccess(r) ? Buffer.from(r.success).toString() : "failed")),
          [TEXT, TEXT]
        )
        const items = yield* Fanout.stream(both(), { read: text }).pipe(Stream.runCollect)
        assert.deepStrictEqual(
          [...items].map((item) => item.value),
          [TEXT, TEXT]
        )
        const staged = yield* Fanout.pipeline(both(), (item) => Effect.succeed(item.value.length), {
          read: text
        }).pipe(Stream.runCollect)
        assert.deepStrictEqual(
          [...staged].map((item) => item.value),
          [TEXT.length, TEXT.length]
        )
        assert.strictEqual(origin.seen.length, 11)
        for (const [i, seen] of origin.seen.entries()) {
          assert.strictEqual(seen.acceptEncoding, "gzip, deflate, br, zstd", String(i))
        }
        const streamedBodies = origin.seen.filter((seen) => !isForm(seen)).map((seen) => seen.body)
        assert.deepStrictEqual(streamedBodies, Array(5).fill("streamed upload"))
        assert.strictEqual(origin.seen.filter(isForm).length, 6)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("interrupting a streamed POST mid-upload ends its stream and closes the connection", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const pulled = yield* Deferred.make<void>()
        const ended = yield* Deferred.make<void>()
        // One chunk, then a stream that never ends: the origin never answers.
        const body = Stream.make(new TextEncoder().encode("first")).pipe(
          Stream.concat(Stream.fromEffect(Deferred.succeed(pulled, undefined)).pipe(Stream.drain)),
          Stream.concat(Stream.never),
          Stream.ensuring(Deferred.succeed(ended, undefined))
        )
        const request = HttpClientRequest.post(`${origin.url}/gzip`).pipe(HttpClientRequest.bodyStream(body))
        const fiber = yield* Effect.forkChild(Http.send(request, text))
        yield* Deferred.await(pulled)
        yield* Fiber.interrupt(fiber)
        yield* Deferred.await(ended)
        yield* Effect.promise(() => origin.closed(1))
        assert.strictEqual(origin.seen.length, 0)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("are counted in NodeHttpClient.metrics", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const { metrics } = NodeHttpClient
        yield* Fanout.allSettled([
          streamed(`${origin.url}/gzip`),
          withForm(`${origin.url}/gzip`),
          streamed(`${origin.url}/missing`),
          withForm(`${origin.url}/zstd`)
        ])
        const requests = (status_class: string) =>
          Effect.map(
            Metric.value(Metric.withAttributes(metrics.requests, { origin: origin.url, status_class })),
            (state) => state.count
          )
        assert.strictEqual(yield* requests("2xx"), 3)
        assert.strictEqual(yield* requests("4xx"), 1)
        const bytes = yield* Metric.value(Metric.withAttributes(metrics.bytesRead, { origin: origin.url }))
        assert.strictEqual(bytes.count, 2 * encoded.gzip!.length + encoded.zstd!.length)
        const inFlight = yield* Metric.value(Metric.withAttributes(metrics.inFlight, { origin: origin.url }))
        assert.strictEqual(inFlight.value, 0)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )
  })

  describe("maxBodySize", () => {
    it.live("fails a body over the layer's limit with BodyTooLargeError and closes its connection", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const exit = yield* Effect.exit(Http.getBytes(`${origin.url}/big`))
        const error = squashed(exit)
        assert.isTrue(HttpBody.isBodyTooLarge(error))
        assert.strictEqual(error?.reason?.cause?.limit, 100_000)
        assert.include(error?.message, `exceeds maxBodySize (100000 bytes)`)
        assert.include(error?.message, `GET ${origin.url}/big`)
        // The server sees the connection of the body over the limit close (else the test times out).
        yield* Effect.promise(() => origin.closed(1))
        // Counted after decoding: 132 000 decoded bytes from a few hundred on the wire (which
        // arrived in full, so that connection stays open for the next request).
        const decoded = yield* Effect.exit(Http.getText(`${origin.url}/gzip`).pipe(HttpBody.withMaxBodySize(100_000)))
        assert.isTrue(HttpBody.isBodyTooLarge(squashed(decoded)))
        assert.strictEqual(yield* Http.getText(`${origin.url}/br`).pipe(HttpBody.withMaxBodySize(200_000)), TEXT)
      }).pipe(Effect.provide(NodeHttpClient.layer({ maxBodySize: 100_000 })), Effect.scoped)
    )

    it.live("applies a limit set around a read of a body that has arrived, and keeps the body for another read", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        // The read is built before the limit is set around it, as `pipe` does.
        const response = yield* HttpClient.get(`${origin.url}/ten`)
        assert.isTrue(
          HttpBody.isBodyTooLarge(squashed(yield* Effect.exit(response.text.pipe(HttpBody.withMaxBodySize(5)))))
        )
        const stream = Stream.runCollect(response.stream).pipe(HttpBody.withMaxBodySize(5))
        assert.isTrue(HttpBody.isBodyTooLarge(squashed(yield* Effect.exit(stream))))
        // Only those reads failed: the body is whole for a read within its limit.
        assert.strictEqual(yield* response.text, "0123456789")
        const [batch] = yield* Fanout.allSettled([`${origin.url}/ten`], {
          read: (r) => r.text.pipe(HttpBody.withMaxBodySize(5))
        })
        assert.isTrue(batch !== undefined && Result.isFailure(batch) && HttpBody.isBodyTooLarge(batch.failure))
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("holds a small body that has arrived whole to the limit of Http.* and a batch's default read", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const ten = `${origin.url}/ten`
        const limited = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.map(Effect.exit(effect.pipe(HttpBody.withMaxBodySize(9))), (exit) =>
            HttpBody.isBodyTooLarge(squashed(exit))
          )
        assert.isTrue(yield* limited(Http.getText(ten)))
        assert.isTrue(yield* limited(Http.getBytes(ten)))
        const [batch] = yield* Fanout.allSettled([ten]).pipe(HttpBody.withMaxBodySize(9))
        assert.isTrue(batch !== undefined && Result.isFailure(batch) && HttpBody.isBodyTooLarge(batch.failure))
        // At the limit, the body is read.
        assert.strictEqual(yield* Http.getText(ten).pipe(HttpBody.withMaxBodySize(10)), "0123456789")
        const [whole] = yield* Fanout.allSettled([ten]).pipe(HttpBody.withMaxBodySize(10))
        assert.isTrue(whole !== undefined && Result.isSuccess(whole) && whole.success.byteLength === 10)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("applies a limit set around a batch to each of its requests", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        const results = yield* Fanout.allSettled([
          `${origin.url}/big`,
          `${origin.url}/gzip`,
          `${origin.url}/zstd`
        ]).pipe(HttpBody.withMaxBodySize(150_000))
        assert.deepStrictEqual(
          results.map((r) => (Result.isSuccess(r) ? "ok" : HttpBody.isBodyTooLarge(r.failure) ? "too large" : "other")),
          ["too large", "ok", "ok"]
        )
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )

    it.live("fails the answer to a streamed or form-data POST over the limit and closes its connection", () =>
      Effect.gen(function* () {
        const origin = yield* bodyOrigin
        for (const [i, request] of [streamed(`${origin.url}/big`), withForm(`${origin.url}/big`)].entries()) {
          const error = squashed(yield* Effect.exit(Http.send(request, (res) => res.arrayBuffer)))
          assert.isTrue(HttpBody.isBodyTooLarge(error), String(error?.message))
          assert.strictEqual(error?.reason?.cause?.limit, 100_000)
          assert.include(error?.message, `POST ${origin.url}/big`)
          yield* Effect.promise(() => origin.closed(i + 1))
        }
        // Per request, after decoding: 132 000 bytes from a few hundred on the wire.
        const decoded = yield* Effect.exit(
          Http.send(withForm(`${origin.url}/zstd`), text).pipe(HttpBody.withMaxBodySize(50_000))
        )
        assert.isTrue(HttpBody.isBodyTooLarge(squashed(decoded)))
        assert.strictEqual(origin.seen.length, 3)
        assert.strictEqual(origin.seen[0]?.body, "streamed upload")
        assert.isTrue(isForm(origin.seen[1]))
      }).pipe(Effect.provide(NodeHttpClient.layer({ maxBodySize: 100_000 })), Effect.scoped)
    )

    it.effect("rejects 0, a negative size and NaN when the layer is built, and in withMaxBodySize", () =>
      Effect.gen(function* () {
        for (const maxBodySize of [0, -1, Number.NaN, 1.5]) {
          const exit = yield* Effect.exit(Layer.build(NodeHttpClient.layer({ maxBodySize })))
          const error = squashed(exit)
          assert.strictEqual(error?._tag, "InvalidOptionsError", String(maxBodySize))
          assert.strictEqual(error?.option, "maxBodySize")
        }
        const perCall = squashed(yield* Effect.exit(Effect.void.pipe(HttpBody.withMaxBodySize(0))))
        assert.strictEqual(perCall?._tag, "InvalidOptionsError")
      }).pipe(Effect.scoped)
    )
  })

  describe("a body arriving in tiny reads", () => {
    // Found by review: each chunk buffered for a read was kept as undici handed it, a Buffer
    // over the socket read that carried it: a body written a byte at a time held ~230 B per
    // byte (60 KB here: 14 MB; 1 MB now), so maxBodySize bounded its bytes but not the memory
    // they took. Small chunks are now copied together.
    it.live("holds about its bytes, not an object per chunk", () =>
      Effect.gen(function* () {
        const BYTES = 60_000 // under the 64 KiB mark: all of it is buffered unread
        let written = 0
        const server = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<ReturnType<typeof createServer>>((resolve) => {
                const s = createServer((_req, res) => {
                  res.writeHead(200, { "content-type": "text/plain" })
                  // One byte per write, each on a turn of its own: one read per byte on the client.
                  const step = () => {
                    if (written === BYTES) return
                    written++
                    res.write("x", () => setImmediate(step))
                  }
                  step()
                })
                s.listen(0, "127.0.0.1", () => resolve(s))
              })
          ),
          (s) =>
            Effect.promise(() => {
              s.closeAllConnections()
              return new Promise<void>((resolve) => s.close(() => resolve()))
            })
        )
        const client = yield* HttpClient.HttpClient
        const before = heapAfterGc() + process.memoryUsage().arrayBuffers
        const response = yield* client.get(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`)
        const body = (response as unknown as { readonly body: { readonly bytes: number } }).body
        // Bounded: every byte arrives within a few seconds.
        for (let i = 0; i < 1000 && body.bytes < BYTES; i++) yield* Effect.sleep("10 millis")
        assert.strictEqual(body.bytes, BYTES)
        const held = heapAfterGc() + process.memoryUsage().arrayBuffers - before
        assert.isBelow(held, 4_000_000, `${BYTES} bytes in ${BYTES} reads held ${held} bytes`)
      }).pipe(Effect.provide(NodeHttpClient.layer()), Effect.scoped)
    )
  })
})
