// The routing dispatcher's bookkeeping: socks5:// routes resolve names locally and keep one
// agent per name, at most `maxNamedRoutes` of them, the least recently used closed first.
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { inspect } from "node:util"
import * as Undici from "@effect/platform-node/Undici"
import { assert, describe, it } from "@effect/vitest"
import { Proxy } from "@volley/core"
import { Effect } from "effect"
import { RoutingDispatcher, withHost } from "../../../src/internal/proxy/dispatcher.ts"

// A proxy that refuses every request and every CONNECT with 407.
const refusingProxy = Effect.acquireRelease(
  Effect.promise(() => {
    const server = createServer((_req, res) => res.writeHead(407).end())
    server.on("connect", (_req, socket) => socket.end("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"))
    return new Promise<typeof server>((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)))
  }),
  (server) =>
    Effect.promise(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
)

// A proxy that answers every forwarded request and refuses every CONNECT, recording the
// Proxy-Authorization each came with.
const recordingProxy = Effect.acquireRelease(
  Effect.promise(() => {
    const seen: Array<string> = []
    const server = createServer((req, res) => {
      seen.push(`${req.url} ${req.headers["proxy-authorization"] ?? "-"}`)
      res.end("ok")
    })
    server.on("connect", (req, socket) => {
      seen.push(`CONNECT ${req.url} ${req.headers["proxy-authorization"] ?? "-"}`)
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n")
    })
    return new Promise<{ readonly server: typeof server; readonly seen: Array<string> }>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve({ server, seen }))
    )
  }),
  ({ server }) =>
    Effect.promise(() => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    })
)

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

describe("RoutingDispatcher", () => {
  it.live("sends each proxy URL its own credentials, when two differ only by a lone user name (a token)", () =>
    Effect.gen(function* () {
      const { server, seen } = yield* recordingProxy
      const port = (server.address() as AddressInfo).port
      // Both labels are `http://<redacted>@127.0.0.1:<port>`: the route key must tell them apart.
      const config = yield* Proxy.make({
        proxyLoopback: true,
        rules: [
          { match: "127.0.0.1:1001", via: `http://tokenA@127.0.0.1:${port}` },
          { match: "127.0.0.1:1002", via: `http://tokenB@127.0.0.1:${port}` }
        ]
      })
      const dispatcher = new RoutingDispatcher(
        config,
        {},
        { originTls: undefined, proxyTls: undefined, tunnelHttp: false }
      )
      yield* Effect.addFinalizer(() => Effect.promise(() => dispatcher.destroy()))
      for (const url of [
        "http://127.0.0.1:1001/a",
        "https://127.0.0.1:1001/a",
        "http://127.0.0.1:1002/b",
        "https://127.0.0.1:1002/b"
      ]) {
        yield* Effect.promise(() =>
          Undici.request(url, { dispatcher }).then(
            (response) => response.body.text(),
            () => undefined
          )
        )
      }
      assert.deepStrictEqual(seen, [
        `http://127.0.0.1:1001/a ${basic("tokenA", "")}`,
        `CONNECT 127.0.0.1:1001 ${basic("tokenA", "")}`,
        `http://127.0.0.1:1002/b ${basic("tokenB", "")}`,
        `CONNECT 127.0.0.1:1002 ${basic("tokenB", "")}`
      ])
    }).pipe(Effect.scoped)
  )

  it.effect("keeps at most maxNamedRoutes per-name socks5 agents, closing the least recently used", () =>
    Effect.gen(function* () {
      const proxy = yield* Proxy.parseUrl("socks5://127.0.0.1:1080")
      const config = yield* Proxy.make({ all: "socks5://127.0.0.1:1080" })
      const dispatcher = new RoutingDispatcher(
        config,
        {},
        { originTls: undefined, proxyTls: undefined, tunnelHttp: false, maxNamedRoutes: 2 }
      )
      const a = dispatcher.via(proxy, "a.example")
      const b = dispatcher.via(proxy, "b.example")
      assert.strictEqual(dispatcher.via(proxy, "a.example"), a) // reused, and now the most recent
      dispatcher.via(proxy, "c.example") // one name too many: b, the least recently used, goes
      assert.deepStrictEqual(
        [...dispatcher.named.keys()].map((key) => key.split("\u0000")[2]),
        ["a.example", "c.example"]
      )
      assert.isTrue(dispatcher.retiring.has(b))
      yield* Effect.promise(() => dispatcher.close())
      assert.strictEqual(dispatcher.retiring.size, 0)
      const closed = (agent: object) => (agent as { readonly closed: boolean }).closed
      assert.isTrue(closed(b), "the evicted agent is closed")
      assert.isTrue(closed(a) && closed(dispatcher.direct))
    })
  )

  it.live("shows no lone proxy user name (usually a token) when inspected, after requests on every path", () =>
    Effect.gen(function* () {
      const server = yield* refusingProxy
      const port = (server.address() as AddressInfo).port
      const token = "ghp_S3cretT0ken"
      const secrets = [token, Buffer.from(`${token}:`).toString("base64")]
      const config = yield* Proxy.make({ all: `http://${token}@127.0.0.1:${port}`, proxyLoopback: true })
      const dispatcher = new RoutingDispatcher(
        config,
        {},
        { originTls: undefined, proxyTls: undefined, tunnelHttp: false }
      )
      yield* Effect.addFinalizer(() => Effect.promise(() => dispatcher.destroy()))
      for (const url of ["http://127.0.0.1:9/forwarded", "https://127.0.0.1:9/tunnelled"]) {
        yield* Effect.promise(() =>
          Undici.request(url, { dispatcher }).then(
            () => undefined,
            () => undefined
          )
        )
      }
      const text = inspect(dispatcher, { depth: Infinity, showHidden: true, getters: true })
      assert.include(text, "<redacted>@127.0.0.1") // the route, by its label
      for (const secret of secrets) assert.notInclude(text, secret)
    }).pipe(Effect.scoped)
  )

  it("adds the origin's Host to every form of headers undici takes, unless one is there", () => {
    assert.deepStrictEqual(withHost(undefined, "a.example:80"), { host: "a.example:80" })
    assert.deepStrictEqual(withHost({ accept: "*/*" }, "a.example"), { accept: "*/*", host: "a.example" })
    assert.deepStrictEqual(withHost(["Host", "b.example"], "a.example"), ["Host", "b.example"])
    const iterable = new Map<string, string | Array<string>>([
      ["accept", "*/*"],
      ["x-tag", ["1", "2"]]
    ])
    assert.deepStrictEqual(withHost(iterable, "a.example"), [
      "accept",
      "*/*",
      "x-tag",
      "1",
      "x-tag",
      "2",
      "host",
      "a.example"
    ])
  })
})
