// An embedded origin for the examples: node:http on 127.0.0.1, a port the kernel picks.
// Every path answers after `delayMs` with a small body, so examples never need the internet.
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { Effect } from "effect"

export interface LocalServer {
  readonly url: string
  readonly urls: (n: number) => ReadonlyArray<string>
}

export const localServer = (delayMs = 50) =>
  Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createServer>>((resume) => {
      const server = createServer((req, res) => {
        const body = `hello from ${req.url}\n`.repeat(8)
        setTimeout(() => res.writeHead(200, { "content-type": "text/plain" }).end(body), delayMs)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(
    Effect.map((server): LocalServer => {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      return { url, urls: (n) => Array.from({ length: n }, (_, i) => `${url}/item/${i}`) }
    })
  )
