// A real HTTP origin for tests: node:http on 127.0.0.1, a port the kernel picks, and
// counters of what the server observed (requests, open sockets, closed sockets).
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { Effect } from "effect"

export type Handler = (req: IncomingMessage, res: ServerResponse) => void

export interface Origin {
  readonly url: string
  readonly requests: () => number
  readonly openSockets: () => number
  /** Resolves when the server has seen `n` sockets close in total. */
  readonly closedSockets: (n: number) => Promise<void>
}

/** Starts the server for the enclosing scope; closing the scope destroys every socket and closes it. */
export const origin = (routes: Record<string, Handler>) =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<{ server: ReturnType<typeof createServer>; sockets: Set<Socket>; origin: Origin }>((resolve) => {
          let requests = 0
          let closed = 0
          const waiters: Array<{ n: number; resolve: () => void }> = []
          const sockets = new Set<Socket>()
          const server = createServer((req, res) => {
            requests++
            const path = new URL(req.url ?? "/", "http://x").pathname
            const handler = routes[path]
            if (handler === undefined) {
              res.writeHead(404, { "content-type": "text/plain" }).end("not found")
            } else {
              handler(req, res)
            }
          })
          server.on("connection", (socket) => {
            sockets.add(socket)
            socket.on("close", () => {
              sockets.delete(socket)
              closed++
              for (const w of waiters.filter((w) => closed >= w.n)) w.resolve()
            })
          })
          server.listen(0, "127.0.0.1", () => {
            const { port } = server.address() as AddressInfo
            resolve({
              server,
              sockets,
              origin: {
                url: `http://127.0.0.1:${port}`,
                requests: () => requests,
                openSockets: () => sockets.size,
                closedSockets: (n) =>
                  closed >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve }))
              }
            })
          })
        })
    ),
    ({ server, sockets }) =>
      Effect.promise(
        () =>
          new Promise<void>((resolve) => {
            for (const socket of sockets) socket.destroy()
            server.close(() => resolve())
          })
      )
  ).pipe(Effect.map(({ origin }) => origin))

/** A free loopback port with nothing listening on it (for connection-refused cases). */
export const closedPort = Effect.promise(
  () =>
    new Promise<number>((resolve) => {
      const server = createServer()
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as AddressInfo
        server.close(() => resolve(port))
      })
    })
)
