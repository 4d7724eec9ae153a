// The response of the fast path: undici's dispatch handler feeds it directly, with no Node
// Readable in between (undici's `request()` builds one per response; it is most of what a
// small response costs). Body chunks are buffered up to a high-water mark, then the
// connection is paused until someone reads, as undici's own body stream does.

import { Readable, type Transform } from "node:stream"
import * as NodeStream from "@effect/platform-node/NodeStream"
import type * as Undici from "@effect/platform-node/Undici"
import * as HttpBody from "@volley/core/HttpBody"
import * as Effect from "effect/Effect"
import * as Cookies from "effect/http/Cookies"
import * as Headers from "effect/http/Headers"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as IncomingMessage from "effect/http/HttpIncomingMessage"
import * as UrlParams from "effect/http/UrlParams"
import * as Inspectable from "effect/Inspectable"
import * as Option from "effect/Option"
import { pipeArguments } from "effect/Pipeable"
import type * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type * as Socket from "effect/socket/Socket"
import { CodingError, decoders as decoders_ } from "./decode.ts"

/** Bytes buffered before an unread body pauses its connection (undici's body stream uses 64 KiB too). */
export const HIGH_WATER_MARK = 64 * 1024

// Chunks smaller than this are buffered by copy (see `Body.keepSmall`), into buffers of at most POOL_SIZE.
const SMALL_CHUNK = 1024
const POOL_SIZE = 16 * 1024

const formDecoder = new TextDecoder("utf-8", { ignoreBOM: true })
const empty = Buffer.alloc(0)

/**
 * The key under which a response offers its body as bytes without a copy; `@volley/core`
 * reads bodies through it when present (a registry symbol, so neither package imports the
 * other's internals).
 */
export const BytesKey: unique symbol = Symbol.for("@volley/core/HttpClientResponse/bytes") as never

/**
 * Present on a response whose `request` carries only the headers its caller set: no trace
 * context added by the client (sent, but kept off the request). `@volley/core`'s redirects then
 * keep every header of the hop before, a caller's own `traceparent` included; without it they
 * drop the trace headers a client may have added for the hop before's span.
 */
export const CallerHeadersKey: unique symbol = Symbol.for("@volley/core/HttpClientResponse/callerHeaders") as never

// UTF-8 without a leading byte order mark, as undici's own body.text() decodes (Buffer's
// decoder measured about twice as fast as TextDecoder on a 16 KiB body).
const decodeUtf8 = (bytes: Uint8Array): string => {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const start = buffer.length > 2 && buffer[0] === 0xef && buffer[1] === 0xbb && buffer[2] === 0xbf ? 3 : 0
  return buffer.toString("utf8", start)
}

// Bytes as a plain Uint8Array over the same memory: a Buffer's slice() would not copy.
const plainBytes = (view: Uint8Array): Uint8Array => new Uint8Array(view.buffer, view.byteOffset, view.byteLength)

/** Whether all of `body` has arrived, held for a read: neither failed nor taken by a stream. */
export const isComplete = (body: Body): boolean => body.ended && body.error === undefined && body.sink === undefined

/**
 * What a built-in read (`text`, bytes) of a complete `body` (see {@link isComplete}) gives when
 * it is within `limit`, as `LeanResponse` reads it; `undefined` over the limit (the response's
 * own read then fails).
 */
export const readComplete = (body: Body, read: "text" | "bytes", limit: number): string | Uint8Array | undefined => {
  if (body.total > limit) return undefined
  return read === "text" ? decodeUtf8(body.view()) : plainBytes(body.view())
}

/** A body that grew past its read's `maxBodySize` (after decompression). */
export class OverLimit extends Error {
  readonly limit: number
  constructor(limit: number) {
    super(`The response body exceeds maxBodySize (${limit} bytes)`)
    this.limit = limit
  }
}

/**
 * The body as it arrives: buffered chunks, or a Readable once someone streams it.
 * Exactly one reader is expected, as with undici's own body.
 *
 * With `codings` (a `Content-Encoding` to decode), wire chunks go through zlib streams created
 * on the first chunk, and what is buffered, counted and streamed is their output. The wire is
 * then paused by the decoder's backpressure (see {@link Feed}), the decoder by the reader's;
 * without codings the reader pauses the wire directly.
 */
export class Body {
  readonly controller: Undici.Dispatcher.DispatchController
  readonly codings: ReadonlyArray<string> | undefined
  /** The client's `maxBodySize` (`Infinity`: none); a read may override it (see `LeanResponse`). */
  readonly defaultLimit: number
  limit = Number.POSITIVE_INFINITY
  // The buffered chunks: the first, then the others once a second arrives (most small bodies
  // come in one chunk; an array and its backing store cost ~180 B more per response).
  first: Buffer | undefined = undefined
  more: Array<Buffer> | undefined = undefined
  // Where small chunks after the first are copied together (see `keepSmall`); `more` ends with
  // its used part while it is set.
  pool: Buffer | undefined = undefined
  pooled = 0
  bytes = 0
  /** Bytes delivered to the reader so far (buffered ones included). */
  total = 0
  ended = false
  error: unknown = undefined
  // Set while `arrayBuffer` waits for the end of the body.
  waiter: (() => void) | undefined = undefined
  sink: BodyReadable | undefined = undefined
  tracked = false
  // The decoders of an encoded body, once its first chunk has come.
  feed: Feed | undefined = undefined

  constructor(
    controller: Undici.Dispatcher.DispatchController,
    codings: ReadonlyArray<string> | undefined,
    defaultLimit: number
  ) {
    this.controller = controller
    this.codings = codings
    this.defaultLimit = defaultLimit
  }

  /** A chunk off the wire. */
  push(chunk: Buffer): void {
    if (this.codings === undefined) {
      this.deliver(chunk)
      return
    }
    if (this.error !== undefined) return
    const feed = this.feed ?? this.startDecoding(chunk)
    feed.wire += chunk.byteLength
    if (feed.wire > wireLimit(this.limit)) {
      this.overLimit()
      return
    }
    feed.write(chunk)
    // Unread, a body of padding (decoding to nothing, so never held up by the reader's
    // backpressure) was read on at wire speed until a read started or the response was collected:
    // its wire is paused, as an unread plain body's is, until a read starts.
    if (this.waiter === undefined && this.sink === undefined && feed.wire - this.total > UNREAD_WIRE) feed.hold()
  }

  private startDecoding(first: Buffer): Feed {
    const codings = this.codings!
    const decoders = decoders_(codings, first)
    decoders.forEach((decoder, i) => {
      decoder.on("error", (cause) => this.decodingFailed(new CodingError(codings[codings.length - 1 - i]!, cause)))
    })
    const last = decoders[decoders.length - 1]!
    last.on("data", (chunk: Buffer) => this.deliver(chunk))
    last.on("end", () => this.finish())
    if (this.waiter === undefined && this.sink === undefined) last.pause()
    this.feed = new Feed(decoders, this.controller)
    return this.feed
  }

  private decodingFailed(error: CodingError): void {
    // Abort first: undici then ends the request (metrics, socket) before the reader resumes.
    this.controller.abort(error)
    this.fail(error)
  }

  /** A chunk for the reader (decoded, if the body is encoded). */
  private deliver(chunk: Buffer): void {
    if (this.error !== undefined) return
    this.total += chunk.byteLength
    if (this.total > this.limit) {
      this.overLimit()
      return
    }
    if (this.sink !== undefined) {
      if (!this.sink.push(chunk)) this.pauseReader()
      return
    }
    if (this.first === undefined) this.first = chunk
    else if (chunk.byteLength < SMALL_CHUNK) this.keepSmall(chunk)
    else {
      this.pool = undefined
      if (this.more === undefined) this.more = [chunk]
      else this.more.push(chunk)
    }
    this.bytes += chunk.byteLength
    // Past, not at, the mark: a body of exactly HIGH_WATER_MARK bytes is awaited before the
    // response is handed over (dispatch.ts), and pausing on its last chunk would hold back its end.
    if (this.bytes > HIGH_WATER_MARK && this.waiter === undefined) this.pauseReader()
  }

  /**
   * A small chunk is copied into a buffer shared with the small chunks around it: kept as undici
   * hands it, a view of the socket read that carried it, a body arriving a byte per read held
   * ~230 B per byte, so `maxBodySize` bounded its bytes but not its memory.
   */
  private keepSmall(chunk: Buffer): void {
    this.more ??= []
    const more = this.more
    let pool = this.pool
    if (pool === undefined || pool.byteLength - this.pooled < chunk.byteLength) {
      // Doubling from SMALL_CHUNK: a body with a few small chunks gets a small buffer.
      pool = Buffer.allocUnsafeSlow(Math.min(POOL_SIZE, 2 * (pool?.byteLength ?? SMALL_CHUNK / 2)))
      this.pool = pool
      this.pooled = 0
      more.push(pool)
    }
    pool.set(chunk, this.pooled)
    this.pooled += chunk.byteLength
    more[more.length - 1] = pool.subarray(0, this.pooled)
  }

  /**
   * Sets the limit of the read that starts now; fails the body at once when more than that
   * has already arrived. Returns whether the body can still be read.
   */
  limitTo(limit: number): boolean {
    this.limit = limit
    // The wire bound stops reading padding on: a body that has ended is judged by what it decoded to.
    const wire = this.ended ? 0 : (this.feed?.wire ?? 0)
    if ((this.total > limit || wire > wireLimit(limit)) && this.error === undefined) this.overLimit()
    return this.error === undefined
  }

  // Fails fast: the rest of the body is not read, and aborting closes the socket.
  private overLimit(): void {
    const error = new OverLimit(this.limit)
    this.first = undefined
    this.more = undefined
    this.pool = undefined
    this.bytes = 0
    // A body that already ended (read in full before this read started) only fails the read.
    if (this.ended) this.error = error
    else this.abort(error)
  }

  /** Fails the body and aborts the request, closing its socket if the body is still arriving. */
  abort(error: Error): void {
    this.controller.abort(error)
    this.fail(error)
  }

  private pauseReader(): void {
    if (this.feed === undefined) this.controller.pause()
    else this.feed.last.pause()
  }

  /** The reader wants more. */
  resume(): void {
    if (this.feed === undefined) this.controller.resume()
    else {
      this.feed.release()
      this.feed.last.resume()
    }
  }

  /** The wire body ended; an encoded body ends once its decoder has flushed (what waits included). */
  end(): void {
    if (this.feed === undefined) this.finish()
    else this.feed.end()
  }

  private finish(): void {
    if (this.error !== undefined || this.ended) return
    this.ended = true
    this.untrack()
    if (this.sink !== undefined) this.sink.push(null)
    else this.waiter?.()
  }

  fail(error: unknown): void {
    if (this.error !== undefined || this.ended) return
    this.error = error
    this.untrack()
    if (this.feed !== undefined) for (const decoder of this.feed.decoders) decoder.destroy()
    if (this.sink !== undefined) this.sink.destroy(error as Error)
    else this.waiter?.()
  }

  untrack(): void {
    if (!this.tracked) return
    this.tracked = false
    dropped.unregister(this)
  }

  /**
   * The whole (ended) body in one piece, without a copy when it came in one chunk: undici's
   * chunks are views of the socket reads that carried them, never reused, as undici's own body
   * stream hands them out. Several chunks are joined once into a buffer of their own.
   */
  view(): Uint8Array {
    const { first, more } = this
    if (first === undefined) return empty
    if (more === undefined) return first
    // Its own ArrayBuffer (never a slab shared with other buffers), not zero-filled first.
    const out = Buffer.allocUnsafeSlow(this.bytes)
    out.set(first, 0)
    let offset = first.byteLength
    for (const chunk of more) {
      out.set(chunk, offset)
      offset += chunk.byteLength
    }
    this.first = out
    this.more = undefined
    this.pool = undefined
    return out
  }

  toReadable(): BodyReadable {
    const readable = new BodyReadable(this)
    if (this.first !== undefined) readable.push(this.first)
    if (this.more !== undefined) for (const chunk of this.more) readable.push(chunk)
    this.first = undefined
    this.more = undefined
    this.pool = undefined
    if (this.error !== undefined) readable.destroy(this.error as Error)
    else if (this.ended) readable.push(null)
    // Set even when the body is complete: it marks the body as taken by a stream.
    this.sink = readable
    this.resume()
    return readable
  }
}

/**
 * How many wire bytes an encoded body may have under a read's `limit` of decoded bytes: twice the
 * limit, and 64 KiB. Data an encoder cannot compress grows by a 64th at most (gzip: 5 bytes in
 * 16 KiB), but a stream flushed after every event does by each flush's few bytes (an SSE stream of
 * 28-byte events: 1.22 wire bytes a decoded byte, measured), so the bound leaves room for that; what
 * passes it is padding that decodes to nothing or next to it (empty gzip members, empty zstd
 * frames), which was read to its end however much of it came.
 */
const wireLimit = (limit: number): number => 2 * limit + 64 * 1024

/**
 * Wire bytes past those decoded that an unread encoded body takes before its wire is paused: more
 * than the decoder and the feed hold of a body that decodes (a write in hand and a high-water mark
 * waiting), so only padding that decodes to nothing reaches it.
 */
const UNREAD_WIRE = 4 * HIGH_WATER_MARK

/**
 * An encoded body's decoders, outermost first, fed its wire chunks one write at a time: each
 * write is a round trip to zlib's thread however small (25-60 µs), so chunks that arrive
 * meanwhile wait to go together (written one by one, an origin sending its body in chunks of
 * one byte cost 10 µs of CPU per byte on the wire). While more than the high-water mark waits
 * (the decoder held up by the reader's backpressure, its write not taken), the wire is paused.
 */
class Feed {
  readonly decoders: Array<Transform>
  readonly decoder: Transform
  /** Whose output the reader gets. */
  readonly last: Transform
  readonly controller: Undici.Dispatcher.DispatchController
  /** Bytes off the wire so far (see `wireLimit`). */
  wire = 0
  // While the decoder has a write in hand: the chunks that came since, and their bytes.
  waiting: Array<Buffer> | undefined = undefined
  bytes = 0
  // Paused: by the feed, while more than the high-water mark waits; held, while the body is unread.
  paused = false
  held = false

  constructor(decoders: Array<Transform>, controller: Undici.Dispatcher.DispatchController) {
    this.decoders = decoders
    this.decoder = decoders[0]!
    this.last = decoders[decoders.length - 1]!
    this.controller = controller
  }

  write(chunk: Buffer): void {
    const waiting = this.waiting
    if (waiting === undefined) {
      this.waiting = []
      this.decoder.write(chunk, this.written)
      return
    }
    waiting.push(chunk)
    this.bytes += chunk.byteLength
    if (this.bytes > HIGH_WATER_MARK && !this.paused) {
      this.paused = true
      this.controller.pause()
    }
  }

  // The decoder took its write: what waited meanwhile goes to it, in one chunk. A decoder whose
  // write failed has failed the body (its 'error'): nothing more goes to it.
  readonly written = (error?: Error | null): void => {
    const waiting = this.waiting
    if (waiting === undefined || error != null || this.decoder.destroyed) return
    if (waiting.length === 0) {
      this.waiting = undefined
      return
    }
    this.waiting = []
    this.decoder.write(this.take(waiting), this.written)
    if (this.paused) {
      this.paused = false
      if (!this.held) this.controller.resume()
    }
  }

  /** Pauses the wire while the body is unread (see `Body.push`). */
  hold(): void {
    if (this.held) return
    this.held = true
    if (!this.paused) this.controller.pause()
  }

  /** A read started: the wire goes on, unless the feed itself holds it. */
  release(): void {
    if (!this.held) return
    this.held = false
    if (!this.paused) this.controller.resume()
  }

  /** The wire body ended: what waits goes with the decoder's end. */
  end(): void {
    const waiting = this.waiting
    this.waiting = undefined
    if (waiting === undefined || waiting.length === 0) this.decoder.end()
    else this.decoder.end(this.take(waiting))
  }

  private take(waiting: Array<Buffer>): Buffer {
    const bytes = this.bytes
    this.bytes = 0
    return waiting.length === 1 ? waiting[0]! : Buffer.concat(waiting, bytes)
  }
}

// A response dropped while its body is still arriving would hold its connection (paused at
// the high-water mark) until bodyTimeout: abort it when the response is garbage-collected, as
// Effect's generic client does. Only responses handed over before their body ended are tracked.
const dropped = new FinalizationRegistry<Body>((body) => {
  body.controller.abort(new Error("The response was dropped before its body was read"))
})

/** Tracks a response handed over while its body is still arriving (see `dropped`). */
export const track = (response: LeanResponse): void => {
  response.body.tracked = true
  dropped.register(response, response.body, response.body)
}

class BodyReadable extends Readable {
  readonly body: Body
  constructor(body: Body) {
    super()
    this.body = body
  }
  override _read() {
    this.body.resume()
  }
  override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
    if (!this.readableEnded) this.body.abort(error ?? new Error("The response body was destroyed"))
    callback(error)
  }
}

/**
 * An `HttpClientResponse` over a {@link Body}. The body can be read once as bytes (then
 * `text`, `json` and `urlParamsBody` reuse them) or streamed once.
 */
export class LeanResponse extends Inspectable.Class implements HttpClientResponse.HttpClientResponse {
  readonly [IncomingMessage.TypeId]: typeof IncomingMessage.TypeId = IncomingMessage.TypeId
  readonly [HttpClientResponse.TypeId]: typeof HttpClientResponse.TypeId = HttpClientResponse.TypeId
  readonly request: HttpClientRequest.HttpClientRequest
  readonly url: string
  readonly status: number
  readonly rawHeaders: Record<string, string | Array<string> | undefined>
  readonly body: Body
  private bytes: ArrayBuffer | undefined = undefined
  private cachedHeaders: Headers.Headers | undefined = undefined
  private cachedCookies: Cookies.Cookies | undefined = undefined

  constructor(
    request: HttpClientRequest.HttpClientRequest,
    url: string,
    status: number,
    rawHeaders: Record<string, string | Array<string> | undefined>,
    body: Body
  ) {
    super()
    this.request = request
    this.url = url
    this.status = status
    this.rawHeaders = rawHeaders
    this.body = body
  }

  get headers(): Headers.Headers {
    if (this.cachedHeaders === undefined) this.cachedHeaders = Headers.fromInput(this.rawHeaders)
    return this.cachedHeaders
  }

  get cookies(): Cookies.Cookies {
    if (this.cachedCookies === undefined) {
      const header = this.rawHeaders["set-cookie"]
      this.cachedCookies = header ? Cookies.fromSetCookie(header) : Cookies.empty
    }
    return this.cachedCookies
  }

  get remoteAddress(): Option.Option<string> {
    return Option.none()
  }

  /**
   * The body as bytes, without a copy when it came in one chunk (see `Body.view`). What
   * `@volley/core` reads (`Http.getBytes`, a batch's default read), under {@link BytesKey}.
   */
  get [CallerHeadersKey](): true {
    return true
  }

  get [BytesKey](): Effect.Effect<Uint8Array, HttpClientError.HttpClientError> {
    return this.whole(plainBytes)
  }

  get arrayBuffer(): Effect.Effect<ArrayBuffer, HttpClientError.HttpClientError> {
    return this.whole((view) => {
      if (this.bytes === undefined) {
        // A buffer of its own is handed out as is; a view of a socket read is copied out of it.
        this.bytes =
          view.byteOffset === 0 && view.byteLength === view.buffer.byteLength
            ? (view.buffer as ArrayBuffer)
            : new Uint8Array(view).buffer
      }
      return this.bytes
    })
  }

  get text(): Effect.Effect<string, HttpClientError.HttpClientError> {
    return this.whole(decodeUtf8)
  }

  /**
   * Waits for the end of the body, then hands `f` the whole of it. The read's `maxBodySize` is
   * the caller's `HttpBody.MaxBodySize`, else the client's, read when the read starts.
   */
  private whole<A>(f: (view: Uint8Array) => A): Effect.Effect<A, HttpClientError.HttpClientError> {
    const body = this.body
    // The limit is the running fiber's: a read built outside `HttpBody.withMaxBodySize` and run
    // inside it (a Fanout `read`, `response.text.pipe(withMaxBodySize(n))`) must honour it.
    return Effect.withFiber((fiber) => {
      const limit = fiber.getRef(HttpBody.MaxBodySize) ?? body.defaultLimit
      if (isComplete(body)) {
        // Complete: over the limit only fails this read; the bytes stay for a read with a larger one.
        return body.total <= limit
          ? Effect.succeed(f(body.view()))
          : Effect.fail(this.decodeError(new OverLimit(limit)))
      }
      if (body.sink !== undefined) return Effect.fail(this.decodeError(new Error("The body is already being streamed")))
      // One reader at a time: a second waiter would replace the first, which would never resume.
      if (body.waiter !== undefined) return Effect.fail(this.decodeError(new Error("The body is already being read")))
      body.limitTo(limit)
      if (body.error !== undefined) return Effect.fail(this.decodeError(body.error))
      if (body.ended) return Effect.succeed(f(body.view()))
      return Effect.callback<A, HttpClientError.HttpClientError>((resume) => {
        body.waiter = () => {
          body.waiter = undefined
          resume(
            // Built on the reader's fiber (see dispatch.ts `onResponseError`).
            body.error !== undefined
              ? Effect.failSync(() => this.decodeError(body.error))
              : Effect.sync(() => f(body.view()))
          )
        }
        body.resume()
        return Effect.sync(() => {
          body.waiter = undefined
          if (!body.ended) body.abort(new Error("The request was interrupted"))
        })
      })
    })
  }

  get json(): Effect.Effect<Schema.Json, HttpClientError.HttpClientError> {
    return Effect.flatMap(this.text, (text) =>
      Effect.try({
        try: () => (text === "" ? null : JSON.parse(text)),
        catch: (cause) => this.decodeError(cause)
      })
    )
  }

  get urlParamsBody(): Effect.Effect<UrlParams.UrlParams, HttpClientError.HttpClientError> {
    return Effect.flatMap(this[BytesKey], (bytes) =>
      Effect.try({
        // A leading "?" is form data; URLSearchParams would drop it as a query prefix.
        try: () => UrlParams.fromInput(new URLSearchParams(formDecoder.decode(bytes).replace(/^\?/, "%3F"))),
        catch: (cause) => this.decodeError(cause)
      })
    )
  }

  get formData(): Effect.Effect<FormData, HttpClientError.HttpClientError> {
    return Effect.flatMap(this.arrayBuffer, (bytes) =>
      Effect.tryPromise({
        try: () => new globalThis.Response(bytes, { headers: this.headers }).formData(),
        catch: (cause) => this.decodeError(cause)
      })
    )
  }

  /** Chunks as they arrive (decoded), never buffered beyond the high-water mark; see `whole` for the limit. */
  get stream(): Stream.Stream<Uint8Array, HttpClientError.HttpClientError> {
    return Stream.unwrap(
      Effect.withFiber((fiber) => {
        const body = this.body
        // A second reader would take chunks from the first: refuse it, and leave the first alone.
        if (body.waiter !== undefined || body.sink !== undefined) {
          return Effect.succeed(Stream.fail(this.decodeError(new Error("The body is already being read"))))
        }
        const limit = fiber.getRef(HttpBody.MaxBodySize) ?? body.defaultLimit
        if (body.ended && body.error === undefined && body.total > limit) {
          return Effect.succeed(Stream.fail(this.decodeError(new OverLimit(limit))))
        }
        body.limitTo(limit)
        return Effect.succeed(
          NodeStream.fromReadable<Uint8Array, HttpClientError.HttpClientError>({
            evaluate: () => body.toReadable(),
            onError: (cause) => this.decodeError(cause)
          })
        )
      })
    )
  }

  // Upgrade requests never reach the fast path (the client hands them to platform-node's).
  get upgrade(): Effect.Effect<Socket.Socket, HttpClientError.HttpClientError> {
    return Effect.fail(
      new HttpClientError.HttpClientError({
        reason: new HttpClientError.StatusCodeError({
          request: this.request,
          response: this,
          description: "expected 101 Switching Protocols"
        })
      })
    )
  }

  private decodeError(cause: unknown): HttpClientError.HttpClientError {
    const request = this.request
    if (cause instanceof OverLimit) {
      const error = new HttpBody.BodyTooLargeError({
        limit: cause.limit,
        method: request.method,
        url: UrlParams.redactUrl(request.url)
      })
      return new HttpClientError.HttpClientError({
        reason: new HttpClientError.DecodeError({ request, response: this, cause: error, description: error.message })
      })
    }
    if (cause instanceof CodingError) {
      return new HttpClientError.HttpClientError({
        reason: new HttpClientError.DecodeError({
          request,
          response: this,
          cause,
          description: cause.message
        })
      })
    }
    return new HttpClientError.HttpClientError({
      reason: new HttpClientError.DecodeError({ request, response: this, cause })
    })
  }

  toJSON(): unknown {
    return IncomingMessage.inspect(this, {
      _id: "effect/http/HttpClientResponse",
      request: this.request.toJSON(),
      status: this.status
    })
  }

  pipe() {
    // biome-ignore lint/complexity/noArguments: Pipeable's contract
    return pipeArguments(this, arguments)
  }
}
