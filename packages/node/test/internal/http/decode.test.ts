import * as Zlib from "node:zlib"
import { assert, describe, it } from "@effect/vitest"
import { decoders } from "../../../src/internal/http/decode.ts"

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
