// A hostile HTTP origin (node:http on 127.0.0.1, a kernel-chosen port) for the body-size tests:
// - /bomb: 1 GiB of zeros gzip-compressed to about 1 MiB. Written as 1024 copies of one gzip
//   member of 1 MiB (a gzip stream may hold many members; every decoder joins them), so neither
//   the server nor the test ever holds the gigabyte, and the body is produced as it is sent;
// - /endless-503: a 503 whose chunked body never ends;
// - /bomb-503: a 503 whose 60 KiB gzip body inflates to 60 MiB (announced small, so it is drained);
// - /padding: 1 GiB of empty gzip members, which decodes to nothing;
// - /random: 1 MiB of random bytes, gzip-compressed (a little larger on the wire than decoded);
// - /events: small events gzip-compressed with a flush after each, as a stream of them is sent
//   (larger on the wire than decoded: each flush adds its bytes).
// It records how many body bytes each route wrote before its connection closed.

import { randomBytes } from "node:crypto"
import { createServer, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import * as Zlib from "node:zlib"
import { Effect } from "effect"

const MiB = 1024 * 1024
/** Bytes /bomb decodes to. */
export const BOMB_DECODED = 1024 * MiB
const member = Zlib.gzipSync(Buffer.alloc(MiB), { level: 9 })
const small503 = Zlib.gzipSync(Buffer.alloc(60 * MiB), { level: 9 })
const emptyMembers = Buffer.concat(Array.from({ length: 1024 }, () => Zlib.gzipSync(Buffer.alloc(0))))
/** The bytes /random decodes to. */
export const RANDOM = randomBytes(MiB)
const randomGzip = Zlib.gzipSync(RANDOM)
// Small events that do not compress (10 random bytes in base64, 17 bytes a line): each flush's
// bytes make the wire 1.22 times what it decodes to (measured).
const event = () => Buffer.from(`${randomBytes(10).toString("base64")}\n`)
/** How many events /events sends, and the bytes they decode to. */
export const FLUSHED = { events: 20_000, bytes: 20_000 * 17 }
const flushedGzip = (() => {
  const chunks: Array<Buffer> = []
  const gzip = Zlib.createGzip()
  // The sync flush of each event, as a server that sends each one at once writes it.
  for (let i = 0; i < FLUSHED.events; i++) {
    gzip.write(event())
    gzip.flush(Zlib.constants.Z_SYNC_FLUSH)
  }
  gzip.end()
  gzip.on("data", (chunk: Buffer) => chunks.push(chunk))
  return new Promise<Buffer>((resolve) => gzip.on("end", () => resolve(Buffer.concat(chunks))))
})()

export interface Hostile {
  readonly url: string
  /** Wire bytes /bomb would send in full. */
  readonly bombWireBytes: number
  /** Resolves with the body bytes a route had written when its connection closed. */
  readonly closedAfter: (route: string) => Promise<number>
}

// Writes `next()` chunks while the socket takes them, until `next` returns undefined or the
// connection closes; resolves with the bytes written.
const pump = (res: ServerResponse, next: () => Buffer | undefined): Promise<number> =>
  new Promise((resolve) => {
    let written = 0
    let open = true
    res.on("close", () => {
      open = false
      resolve(written)
    })
    const write = () => {
      while (open) {
        const chunk = next()
        if (chunk === undefined) return res.end()
        written += chunk.length
        if (!res.write(chunk)) return res.once("drain", write)
      }
    }
    write()
  })

export const hostileOrigin = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ server: ReturnType<typeof createServer>; closedAfter: Hostile["closedAfter"] }>((resolve) => {
        const closings = new Map<string, Promise<number>>()
        const server = createServer((req, res) => {
          const route = new URL(req.url ?? "/", "http://x").pathname
          if (route === "/bomb") {
            let sent = 0
            res.writeHead(200, { "content-encoding": "gzip", "content-length": member.length * 1024 })
            closings.set(
              route,
              pump(res, () => (sent++ < 1024 ? member : undefined))
            )
          } else if (route === "/endless-503") {
            const chunk = Buffer.alloc(64 * 1024, "x")
            res.writeHead(503, { "content-type": "text/plain" })
            // Bounded all the same: 8 GiB at most if a client read it all.
            let sent = 0
            closings.set(
              route,
              pump(res, () => (sent++ < 128 * 1024 ? chunk : undefined))
            )
          } else if (route === "/bomb-503") {
            res.writeHead(503, { "content-encoding": "gzip", "content-length": small503.length })
            let sent = 0
            closings.set(
              route,
              pump(res, () => (sent++ < 1 ? small503 : undefined))
            )
          } else if (route === "/padding") {
            res.writeHead(200, { "content-encoding": "gzip" })
            let sent = 0
            const limit = (1024 * MiB) / emptyMembers.length
            closings.set(
              route,
              pump(res, () => (sent++ < limit ? emptyMembers : undefined))
            )
          } else if (route === "/events") {
            void flushedGzip.then((body) => res.writeHead(200, { "content-encoding": "gzip" }).end(body))
          } else if (route === "/random") {
            res.writeHead(200, { "content-encoding": "gzip", "content-length": randomGzip.length }).end(randomGzip)
          } else {
            res.writeHead(404).end()
          }
        })
        const closedAfter = (route: string) =>
          closings.get(route) ?? Promise.reject(new Error(`${route} was never requested`))
        server.listen(0, "127.0.0.1", () => resolve({ server, closedAfter }))
      })
  ),
  ({ server }) =>
    Effect.promise(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
).pipe(
  Effect.map(
    ({ server, closedAfter }): Hostile => ({
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      bombWireBytes: member.length * 1024,
      closedAfter
    })
  )
)
