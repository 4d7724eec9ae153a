import { mkdtempSync, rmSync } from "node:fs"
import { createServer as createHttpServer, type Server } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TLSSocket } from "node:tls"
import type * as Undici from "@effect/platform-node/Undici"
import { assert, describe, it } from "@effect/vitest"
import { Proxy } from "@volley/core"
import { NodeProxy } from "@volley/node"
import { Effect } from "effect"
import { DirectAgent } from "../../../src/internal/http/agent.ts"
import { makePki } from "../../fixtures/pki.ts"

// Listening on a socket path, or on a port of 127.0.0.1 (0: any).
const listening = (server: Server, at: string | number) =>
  Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<void>((resolve) =>
          typeof at === "string" ? server.listen(at, () => resolve()) : server.listen(at, "127.0.0.1", () => resolve())
        )
    ),
    () =>
      Effect.promise(
        () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          })
      )
  )

const destroyed = <D extends Undici.Dispatcher>(make: () => D) =>
  Effect.acquireRelease(Effect.sync(make), (dispatcher) => Effect.promise(() => dispatcher.destroy()))

const text = (dispatcher: Undici.Dispatcher, origin: string) =>
  Effect.promise(async () => {
    const response = await dispatcher.request({ origin, path: "/", method: "GET", reset: true })
    return response.body.text()
  })

describe("DirectAgent", () => {
  it.live("connects with the pool options undici's pools connect with (socketPath), through makeDispatcher too", () =>
    Effect.gen(function* () {
      const dir = mkdtempSync(join(tmpdir(), "volley-agent-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const path = join(dir, "origin.sock")
      yield* listening(
        createHttpServer((_request, response) => response.end("over the socket")),
        path
      )
      // No one listens on the origin's own port: only the socket path reaches the server.
      const agent = yield* destroyed(() => new DirectAgent({ socketPath: path }))
      assert.strictEqual(yield* text(agent, "http://127.0.0.1:9"), "over the socket")
      const routing = yield* destroyed(() => NodeProxy.makeDispatcher(Proxy.none, { socketPath: path }))
      assert.strictEqual(yield* text(routing, "http://127.0.0.1:9"), "over the socket")
    }).pipe(Effect.scoped)
  )

  it.live("caches no TLS session with maxCachedSessions: 0", () =>
    Effect.gen(function* () {
      const pki = makePki()
      const server = createHttpsServer({ cert: pki.serverCert, key: pki.serverKey }, (_request, response) =>
        response.end("ok")
      )
      const resumed: Array<boolean> = []
      server.on("secureConnection", (socket: TLSSocket) => resumed.push(socket.isSessionReused()))
      yield* listening(server, 0)
      const origin = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
      for (const maxCachedSessions of [undefined, 0]) {
        resumed.length = 0
        const agent = yield* destroyed(
          () =>
            new DirectAgent({
              connect: { ca: pki.ca },
              ...(maxCachedSessions === undefined ? {} : { maxCachedSessions })
            })
        )
        for (let i = 0; i < 3; i++) {
          yield* text(agent, origin)
          // The session ticket arrives after the handshake: let it reach the client.
          yield* Effect.sleep("50 millis")
        }
        assert.deepStrictEqual(resumed, maxCachedSessions === 0 ? [false, false, false] : [false, true, true])
      }
    }).pipe(Effect.scoped)
  )

  it.live("takes a connector of the caller's that fails before it returns", () =>
    Effect.gen(function* () {
      // A filter of the caller's (an address it refuses, say) calls back at once: undici's Agent
      // fails the request with its error.
      const refused = new Error("refused by the caller's connector")
      const agent = yield* destroyed(
        () => new DirectAgent({ connect: (_options, callback) => callback(refused, null) })
      )
      const error = yield* Effect.flip(
        Effect.tryPromise(() => agent.request({ origin: "http://127.0.0.1:9", path: "/", method: "GET" }))
      )
      assert.strictEqual((error as { readonly cause?: unknown }).cause, refused)
      assert.strictEqual(agent.opening.size, 0)
    }).pipe(Effect.scoped)
  )
})
