// Upgrade requests (a request with an `Upgrade` header) go to platform-node's client on the same
// dispatcher: a 101 hands over the connection as a Socket, a refusal is an ordinary response.
import { createServer } from "node:http"
import type { AddressInfo, Socket as NetSocket } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { NodeHttpClient } from "@volley/node"
import { Effect, Metric } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import * as Socket from "effect/socket/Socket"

// Answers `Upgrade: echo` with 101 and then echoes what it reads; refuses any other protocol.
const echoServer = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ readonly url: string; readonly close: () => void }>((resolve) => {
        const sockets = new Set<NetSocket>()
        const server = createServer((_req, res) => res.writeHead(426, { "content-length": "4" }).end("nope"))
        server.on("upgrade", (req, socket: NetSocket) => {
          sockets.add(socket)
          if (req.headers.upgrade !== "echo") {
            socket.end("HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope")
            return
          }
          socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n")
          socket.on("data", (chunk) => socket.write(chunk))
        })
        server.listen(0, "127.0.0.1", () => {
          const { port } = server.address() as AddressInfo
          resolve({
            url: `http://127.0.0.1:${port}`,
            close: () => {
              for (const socket of sockets) socket.destroy()
              server.close()
            }
          })
        })
      })
  ),
  (server) => Effect.sync(server.close)
)

const requests = (origin: string, statusClass: string) =>
  Effect.map(
    Metric.value(Metric.withAttributes(NodeHttpClient.metrics.requests, { origin, status_class: statusClass })),
    (state) => state.count
  )

// A GET to the echo server asking to switch to `protocol`, with the server's URL.
const upgradeTo = (protocol: string) =>
  Effect.gen(function* () {
    const server = yield* echoServer
    const client = yield* HttpClient.HttpClient
    const response = yield* client.execute(
      HttpClientRequest.get(`${server.url}/chat`).pipe(HttpClientRequest.setHeader("upgrade", protocol))
    )
    return { url: server.url, response }
  })

describe("NodeHttpClient", () => {
  describe("upgrades", () => {
    it.live("a 101 hands over the connection as a Socket that carries bytes both ways; counted as 1xx", () =>
      Effect.gen(function* () {
        const { url, response } = yield* upgradeTo("echo")
        assert.strictEqual(response.status, 101)
        const socket = yield* response.upgrade
        const writer = yield* socket.writer
        const read = yield* Socket.readerBytes(socket)
        yield* writer.write("ping")
        let echoed = ""
        while (echoed.length < 4) echoed += Buffer.concat(yield* read).toString()
        assert.strictEqual(echoed, "ping")
        assert.strictEqual(yield* requests(url, "1xx"), 1)
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )

    it.live("a refused upgrade is an ordinary response whose body reads; counted by its status", () =>
      Effect.gen(function* () {
        const { url, response } = yield* upgradeTo("other")
        assert.strictEqual(response.status, 426)
        assert.strictEqual(yield* response.text, "nope")
        assert.strictEqual(yield* requests(url, "4xx"), 1)
      }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
    )
  })
})
