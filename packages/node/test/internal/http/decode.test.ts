import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { decoders, MAX_ZSTD_FRAMES, ZSTD_BYTES_PER_FRAME } from "../../../src/internal/http/decode.ts"

// Decodes `body` (one chunk) through the chain for `codings`, to the end of its output.
const decode = (codings: ReadonlyArray<string>, body: Buffer): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chain = decoders(codings, body)
    const last = chain[chain.length - 1]!
    const out: Array<Buffer> = []
    last.on("data", (chunk: Buffer) => out.push(chunk))
    last.on("end", () => resolve(Buffer.concat(out)))
    last.on("error", reject)
    chain[0]!.end(body)
  })

describe("decoders", () => {
  // Found by review: a frame's decoder that ended inside a chunk was replaced by a new one but
  // never destroyed (its input side never finishes, so Node's autoDestroy never ran): each
  // frame's zstd context and window stayed allocated until garbage collection. A 600 KB body
  // of 60,000 one-byte frames read with Http.getText took 12 s of CPU and grew RSS by 512 MB
  // (5 s and 281 MB with each ended decoder destroyed).
  it("closes each zstd frame's decoder once the frame has ended", async () => {
    const frames = 200
    const frame = Zlib.zstdCompressSync(Buffer.from("x"))
    const ZstdDecompress = Object.getPrototypeOf(Zlib.createZstdDecompress()) as {
      _destroy: (error: Error | null, done: (error?: Error | null) => void) => void
    }
    let destroyed = 0
    // An own `_destroy` over the inherited one, counting zstd decoders only; removed after.
    ZstdDecompress._destroy = function (this: unknown, error, done) {
      destroyed++
      return Object.getPrototypeOf(ZstdDecompress)._destroy.call(this, error, done)
    }
    try {
      const decoded = await decode(["zstd"], Buffer.concat(Array.from({ length: frames }, () => frame)))
      assert.strictEqual(decoded.toString(), "x".repeat(frames))
      // Node destroys the last frame's decoder when the body ends (autoDestroy); the others are ours to.
      await new Promise((resolve) => setImmediate(resolve))
      assert.strictEqual(destroyed, frames)
    } finally {
      delete (ZstdDecompress as { _destroy?: unknown })._destroy
    }
  })
})

describe("zstd frames", () => {
  // Found by review: each frame of a zstd body costs a decoder of its own and a round trip to
  // zlib's thread (about 50 µs), whatever it holds, so a body of empty frames (9 bytes each)
  // burned 5.6 s of CPU per MiB on the wire, decoded to nothing and so never reached maxBodySize:
  // 2 MiB under a 1 MiB limit took 11 s of CPU. Past MAX_ZSTD_FRAMES the body is refused.
  it("decodes up to MAX_ZSTD_FRAMES frames and refuses a body with more", async () => {
    const frame = Zlib.zstdCompressSync(Buffer.from("x"))
    const decoded = await decode(["zstd"], Buffer.concat(Array.from({ length: MAX_ZSTD_FRAMES }, () => frame)))
    assert.strictEqual(decoded.toString(), "x".repeat(MAX_ZSTD_FRAMES))
    const empty = Zlib.zstdCompressSync(Buffer.alloc(0))
    const error = await decode(["zstd"], Buffer.concat(Array.from({ length: MAX_ZSTD_FRAMES + 1 }, () => empty))).then(
      () => undefined,
      (error: unknown) => error
    )
    assert.instanceOf(error, Error)
    assert.include((error as Error).message, `more than ${MAX_ZSTD_FRAMES} frames`)
  })

  it("decodes more frames when each pays with its output (a body made of many large frames)", async () => {
    const frame = Zlib.zstdCompressSync(Buffer.alloc(ZSTD_BYTES_PER_FRAME, "y"))
    const frames = MAX_ZSTD_FRAMES + 100
    const decoded = await decode(["zstd"], Buffer.concat(Array.from({ length: frames }, () => frame)))
    assert.strictEqual(decoded.length, frames * ZSTD_BYTES_PER_FRAME)
  })
})
