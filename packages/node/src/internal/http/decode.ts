// Content-Encoding decoding for the direct client: the codings Node's zlib has, as streams fed
// with the wire chunks undici hands over. Created only for a response that names a coding and
// has a body, so an identity response never pays for zlib.
import { Transform, type TransformCallback } from "node:stream"
import * as Zlib from "node:zlib"

/** What the client asks for when decompression is on: every coding it can decode. */
export const ACCEPT_ENCODING = "gzip, deflate, br, zstd"

const KNOWN = new Set(["gzip", "x-gzip", "deflate", "br", "zstd"])

/**
 * The codings of a `Content-Encoding` header in the order they were applied, or `undefined`
 * when there is nothing to decode: no header, only `identity`, or a coding this client cannot
 * decode (the body is then handed over as it came, as fetch does).
 */
export const codingsOf = (header: string | Array<string> | undefined): ReadonlyArray<string> | undefined => {
  if (header === undefined) return undefined
  const codings: Array<string> = []
  for (const part of (Array.isArray(header) ? header.join(",") : header).split(",")) {
    const coding = part.trim().toLowerCase()
    if (coding === "" || coding === "identity") continue
    if (!KNOWN.has(coding)) return undefined
    codings.push(coding)
  }
  return codings.length === 0 ? undefined : codings
}

/**
 * Most codings decoded in a chain: each is a zlib stream with buffers of its own, so a hostile
 * origin listing thousands (under a 16 KiB header) would cost seconds and megabytes for a small
 * body. undici's fetch refuses more than 5 too (curl CVE-2022-32206).
 */
export const MAX_CODINGS = 5

/** The error a body with more than {@link MAX_CODINGS} codings fails with, unread. */
export const tooManyCodings = (codings: ReadonlyArray<string>): CodingError =>
  new CodingError(
    `${codings.length}-coding`,
    new Error(`its Content-Encoding lists ${codings.length} codings, at most ${MAX_CODINGS} are decoded`)
  )

/**
 * A body that does not decode as its `Content-Encoding` says; zlib's error is its `cause`. It has
 * no `code` of its own (zlib's `Z_DATA_ERROR` stays on the cause), so the retry policy, which
 * retries a body failure with an I/O code, does not fetch a corrupt body again.
 */
export class CodingError extends Error {
  readonly coding: string
  constructor(coding: string, cause: unknown) {
    super(`the ${coding} body does not decode: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.name = "CodingError"
    this.coding = coding
  }
}

/**
 * One zlib stream per coding, outermost (last applied) first, piped into each other. `first`,
 * the first bytes of the body, tells zlib-wrapped deflate (RFC 1950, what the RFC means) from
 * raw deflate (what some servers send): a zlib header's low nibble is 8.
 */
export const decoders = (codings: ReadonlyArray<string>, first: Uint8Array): Array<Transform> => {
  const streams: Array<Transform> = []
  for (let i = codings.length - 1; i >= 0; i--) {
    streams.push(decoder(codings[i]!, i === codings.length - 1 ? first : undefined))
  }
  for (let i = 0; i < streams.length - 1; i++) streams[i]!.pipe(streams[i + 1]!)
  return streams
}

const decoder = (coding: string, first: Uint8Array | undefined): Transform => {
  switch (coding) {
    case "br":
      return Zlib.createBrotliDecompress()
    case "zstd":
      return new ZstdFrames()
    case "deflate":
      // Inside a chain the inner bytes are unknown until decoded: RFC 1950, as specified.
      return first === undefined || first.length === 0 || (first[0]! & 0x0f) === 8
        ? Zlib.createInflate()
        : Zlib.createInflateRaw()
    default:
      return Zlib.createGunzip()
  }
}

/**
 * A zstd frame's header names its window, which the decoder allocates and fills as it decodes:
 * up to 128 MiB by default (ZSTD_d_windowLogMax 27), so a 24 KB body streamed to its end held
 * 167 MiB per response. RFC 9659 bounds the window of the `zstd` content coding at 8 MiB, as
 * Chrome and Firefox enforce; a frame asking for more fails as a corrupt body.
 */
const ZSTD_OPTIONS: Zlib.ZstdOptions = { params: { [Zlib.constants.ZSTD_d_windowLogMax]: 23 } }

/**
 * Frames a zstd body may have whatever they decode to. Each costs a decoder of its own and a
 * round trip to zlib's thread, about 50 µs whatever it holds: a hostile origin's body of empty
 * frames (9 bytes each) burned 5.6 s of CPU per MiB on the wire and, decoding to nothing, never
 * reached `maxBodySize`. Encoders end a frame at the end of their input, not at a flush, so a
 * real body has a few; one made of many (a seekable archive served as it is) may have one more
 * for each {@link ZSTD_BYTES_PER_FRAME} it has decoded to.
 */
export const MAX_ZSTD_FRAMES = 1024
/** Decoded bytes that pay for a frame beyond {@link MAX_ZSTD_FRAMES}: ~3 ns of CPU a byte. */
export const ZSTD_BYTES_PER_FRAME = 16 * 1024

/**
 * A zstd body of one or more frames (RFC 8878 §3; `zstd -d` and curl decode them all). Node's
 * decoder ends at the end of the first frame that ends inside a chunk and ignores the rest, so
 * a body of two frames read as its first: here the rest goes to a new decoder, once the ended
 * one has delivered all it decoded (the output stays in order). Anything after the last frame
 * that is not a frame fails as a corrupt body.
 */
class ZstdFrames extends Transform {
  private decoder: Zlib.ZstdDecompress
  private frames = 1
  private decoded = 0

  constructor() {
    super()
    this.decoder = this.frame()
  }

  private frame(): Zlib.ZstdDecompress {
    const decoder = Zlib.createZstdDecompress(ZSTD_OPTIONS)
    decoder.on("data", (chunk: Buffer) => {
      this.decoded += chunk.length
      if (!this.push(chunk)) decoder.pause()
    })
    decoder.on("error", (error) => this.destroy(error))
    return decoder
  }

  override _read(size: number): void {
    this.decoder.resume()
    // Transform's own: releases the input it held back while the output was over its mark.
    super._read(size)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.write_(chunk, done)
  }

  private write_(chunk: Buffer, done: TransformCallback): void {
    const decoder = this.decoder
    const before = decoder.bytesWritten
    decoder.write(chunk, (error) => {
      if (error !== undefined && error !== null) return done(error)
      const used = decoder.bytesWritten - before
      if (used >= chunk.length) return done()
      // The frame ended inside this chunk: what follows starts the next one.
      const next = () => {
        // Its input side never finishes, so Node's autoDestroy never closes it: its context and
        // window would stay allocated until garbage collection, one per frame.
        decoder.destroy()
        if (++this.frames > MAX_ZSTD_FRAMES + this.decoded / ZSTD_BYTES_PER_FRAME) {
          const error = `it has more than ${MAX_ZSTD_FRAMES} frames, of ${ZSTD_BYTES_PER_FRAME} decoded bytes or less each past those`
          return done(new Error(error))
        }
        this.decoder = this.frame()
        this.write_(chunk.subarray(used), done)
      }
      if (decoder.readableEnded) next()
      else decoder.once("end", next)
    })
  }

  override _flush(done: TransformCallback): void {
    const decoder = this.decoder
    decoder.once("end", () => done())
    decoder.end()
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.decoder.destroy()
    done(error)
  }
}
