import { readFileSync } from "node:fs"
import type { IncomingMessage } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import { type AddressInfo, connect, createServer, type Socket } from "node:net"
import { join } from "node:path"
import { inspect } from "node:util"
import { assert, describe, layer } from "@effect/vitest"
import { Fanout, Http, Proxy, Retry } from "@volley/core"
import { NodeHttpClient, NodeProxy } from "@volley/node"
import { Cause, ConfigProvider, Effect, Exit, Fiber, Layer, Logger, References, Result, Scope, Tracer } from "effect"
import { HttpClient } from "effect/http"
import { TestClock } from "effect/testing"
import { h2Origin } from "../packages/node/test/fixtures/h2Origin.ts"
import { type Origin, PASSWORD, ProxyServers, layer as serversLayer, TINY_PASSWORD, USER } from "./servers/proxies.ts"
import { onSpanEnd } from "./support/tracer.ts"

const enc = encodeURIComponent
const secrets = [PASSWORD, enc(PASSWORD), Buffer.from(`${USER}:${PASSWORD}`).toString("base64")]

const assertNoSecret = (text: string) => {
  for (const secret of secrets) assert.notInclude(text, secret)
}

// A client routed by `options`, trusting the test CA; loopback is proxied since every proxy here is local.
const client = (options: Proxy.Options, nodeOptions: NodeProxy.Options = {}) =>
  Layer.unwrap(
    Effect.gen(function* () {
      const servers = yield* ProxyServers
      const config = yield* Proxy.make({ proxyLoopback: true, ...options })
      return NodeProxy.layer(config, { originTls: { ca: servers.ca }, connectTimeout: "3 seconds", ...nodeOptions })
    })
  )

/** Asserts that a proxy's log shows `text` (waiting briefly: squid logs a tunnel when it closes). */
const logged = (name: string, text: string) =>
  Effect.gen(function* () {
    const s = yield* ProxyServers
    assert.include(yield* s.logWith(name, text), text)
  })

// Every way an object reaches a person or a log: util.inspect at any depth (hidden properties and
// getters too), JSON, and every string reachable through its properties.
const renderings = (value: unknown): Array<string> => [
  inspect(value, { depth: Infinity, showHidden: true }),
  inspect(value, { depth: Infinity, getters: true }),
  JSON.stringify(value, cycleSafe()) ?? "",
  reachableStrings(value).join("\n")
]

const cycleSafe = () => {
  const seen = new WeakSet<object>()
  return (_key: string, value: unknown) => {
    if (typeof value === "bigint") return String(value)
    if (typeof value !== "object" || value === null) return value
    if (seen.has(value)) return "[Circular]"
    seen.add(value)
    return value instanceof Map ? [...value] : value instanceof Set ? [...value] : value
  }
}

// The strings held by own data properties (symbol-keyed and hidden ones too), Map and Set entries,
// of everything reachable from `root`; getters are not called.
const reachableStrings = (root: unknown): Array<string> => {
  const strings: Array<string> = []
  const seen = new Set<unknown>()
  const queue: Array<unknown> = [root]
  while (queue.length > 0) {
    const value = queue.pop()
    if (typeof value === "string") strings.push(value)
    if ((typeof value !== "object" && typeof value !== "function") || value === null || seen.has(value)) continue
    seen.add(value)
    if (value instanceof Map) for (const entry of value) queue.push(...entry)
    if (value instanceof Set) for (const entry of value) queue.push(entry)
    for (const key of Reflect.ownKeys(value)) {
      const descriptor = Object.getOwnPropertyDescriptor(value, key)
      if (typeof key === "string") strings.push(key)
      if (descriptor !== undefined && "value" in descriptor) queue.push(descriptor.value)
    }
  }
  return strings
}

const failureOf = <A, E>(exit: Exit.Exit<A, E>): unknown => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  return Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
}

/**
 * An HTTPS forward proxy on ::1 with the test CA's leaf (its SANs include IP ::1): answers
 * forwarded requests itself, recording their targets, and tunnels CONNECT to the target.
 */
const tlsProxyOnV6 = (targets: Array<string>) =>
  Effect.gen(function* () {
    const s = yield* ProxyServers
    const pki = (name: string) => readFileSync(join(s.dir, "pki", name))
    const sockets = new Set<Socket>()
    const server = createHttpsServer({ cert: pki("server.crt"), key: pki("server.key") }, (req, res) => {
      targets.push(req.url ?? "")
      res.end("via the TLS proxy on ::1")
    })
    server.on("connect", (req: IncomingMessage, client: Socket) => {
      targets.push(`CONNECT ${req.url}`)
      const [host, port] = [req.url?.replace(/:\d+$/, "") ?? "", Number(req.url?.split(":").pop())]
      const upstream = connect(port, host === "localhost" ? "127.0.0.1" : host, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n")
        upstream.pipe(client).pipe(upstream)
      })
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on("error", () => socket.destroy()).on("close", () => sockets.delete(socket))
      }
    })
    return yield* Effect.acquireRelease(
      Effect.promise(
        () =>
          new Promise<number>((resolve) =>
            server.listen(0, "::1", () => resolve((server.address() as AddressInfo).port))
          )
      ),
      () =>
        Effect.promise(() => {
          for (const socket of sockets) socket.destroy()
          server.closeAllConnections()
          return new Promise<void>((resolve) => server.close(() => resolve()))
        })
    )
  })

/**
 * A TLS origin that never answers: it accepts TCP and reads, but never says a word back, so a TLS
 * handshake with it never ends. `greeted(n)` waits until n connections sent it something (a
 * ClientHello); `closed` until none of its connections is open.
 */
const silentTlsOrigin = Effect.gen(function* () {
  const open = new Set<Socket>()
  let greetings = 0
  const changed: Array<() => void> = []
  const wake = () => {
    for (const waiter of changed.splice(0)) waiter()
  }
  const until = (done: () => boolean) =>
    Effect.promise(async () => {
      while (!done()) await new Promise<void>((resolve) => changed.push(resolve))
    })
  const server = createServer((socket) => {
    open.add(socket)
    socket.once("data", () => {
      greetings++
      wake()
    })
    socket
      .on("error", () => {})
      .on("close", () => {
        open.delete(socket)
        wake()
      })
    socket.resume()
  })
  const port = yield* Effect.acquireRelease(
    Effect.promise(
      () =>
        new Promise<number>((resolve) =>
          server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))
        )
    ),
    () =>
      Effect.promise(() => {
        for (const socket of open) socket.destroy()
        return new Promise<void>((resolve) => server.close(() => resolve()))
      })
  )
  return { port, greeted: (n: number) => until(() => greetings >= n), closed: until(() => open.size === 0) }
})

// One attempt: these tests are about the client and the proxies, not the retry policy (which
// `Http.*` applies as batches do, and which would retry a proxy's 503 like an origin's).
const getVia = (url: string, options: Proxy.Options, nodeOptions?: NodeProxy.Options) =>
  Http.getText(url).pipe(
    Proxy.unwrapErrors,
    Effect.provide(Layer.merge(client(options, nodeOptions), Retry.layer({ retries: 0 })))
  )

layer(serversLayer, { excludeTestServices: true, timeout: "60 seconds" })("NodeProxy (real proxies)", (it) => {
  describe("squid", () => {
    it.effect("forwards plain HTTP in absolute form (squid logs the request, the origin sees its Via)", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const proxy = `http://127.0.0.1:${s.squidOpen}`
        assert.strictEqual(yield* getVia(`${s.http.url}/squid-plain`, { http: proxy }), "hello from /squid-plain")
        yield* logged("squid/access.log", `GET ${s.http.url}/squid-plain`)
        const seen = s.http.seen.find((r) => r.path === "/squid-plain")
        assert.include(String(seen?.headers.via), "squid")
      })
    )

    it.effect("tunnels HTTPS with CONNECT and verifies the origin against a custom CA", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const body = yield* getVia(`${s.https.url}/squid-tls`, { https: `http://127.0.0.1:${s.squidOpen}` })
        assert.strictEqual(body, "hello from /squid-tls")
        yield* logged("squid/access.log", `CONNECT localhost:${s.https.port}`)
      })
    )

    it.effect("rejects an origin certificate outside originTls, and does not blame the proxy for it", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const config = yield* Proxy.make({ all: `http://127.0.0.1:${s.squidOpen}`, proxyLoopback: true })
        const exit = yield* Effect.exit(
          Http.getText(`${s.https.url}/untrusted-origin`).pipe(
            Proxy.unwrapErrors,
            Effect.provide(NodeProxy.layer(config))
          )
        )
        const error = failureOf(exit)
        assert.isFalse(Proxy.isProxyError(error))
        assert.strictEqual((error as { reason?: { _tag: string } }).reason?._tag, "TransportError")
        assert.isUndefined(s.https.seen.find((r) => r.path === "/untrusted-origin"))
      })
    )

    it.effect("authenticates with Basic credentials from the URL, for HTTP and HTTPS", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `http://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`
        assert.strictEqual(yield* getVia(`${s.http.url}/squid-auth`, { all }), "hello from /squid-auth")
        assert.strictEqual(yield* getVia(`${s.https.url}/squid-auth-tls`, { all }), "hello from /squid-auth-tls")
        yield* logged("squid/access.log", `GET ${s.http.url}/squid-auth ${USER} `)
      })
    )

    it.effect("fails with a ProxyAuthenticationError on a wrong password (407), password redacted", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `http://${USER}:wrong-${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`
        for (const url of [`${s.http.url}/squid-wrong`, `${s.https.url}/squid-wrong`]) {
          const error = failureOf(yield* Effect.exit(getVia(url, { all })))
          assert.instanceOf(error, Proxy.ProxyAuthenticationError)
          const e = error as Proxy.ProxyAuthenticationError
          assert.strictEqual(e.proxy, `http://${USER}:<redacted>@127.0.0.1:${s.squidAuth}`)
          assert.include(e.message, "<redacted>")
          assertNoSecret(e.message)
          assert.notInclude(e.message, "wrong-")
        }
      })
    )

    it.effect("fails with a ProxyConnectionError carrying the status when squid cannot open the tunnel, once", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        // Nothing listens on port 1 of loopback: squid answers the CONNECT with 503.
        const error = failureOf(
          yield* Effect.exit(getVia("https://127.0.0.1:1/refused", { all: `http://127.0.0.1:${s.squidOpen}` }))
        )
        assert.instanceOf(error, Proxy.ProxyConnectionError)
        const e = error as Proxy.ProxyConnectionError
        assert.strictEqual(e.status, 503)
        assert.strictEqual(e.target, "127.0.0.1:1")
        assert.strictEqual(e.reason, "the proxy refused the CONNECT tunnel with status 503")
        const log = yield* s.logWith("squid/access.log", "CONNECT 127.0.0.1:1 ")
        assert.strictEqual(log.split("CONNECT 127.0.0.1:1 ").length - 1, 1, "one CONNECT, no reconnect loop")
      })
    )

    it.effect("fails with a ProxyAuthenticationError when credentials are missing", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const error = failureOf(
          yield* Effect.exit(getVia(`${s.https.url}/no-creds`, { all: `http://127.0.0.1:${s.squidAuth}` }))
        )
        assert.instanceOf(error, Proxy.ProxyAuthenticationError)
      })
    )
  })

  describe("squid over TLS (https:// proxy URL)", () => {
    it.effect("talks TLS to the proxy, trusting it through proxyTls, for HTTP and HTTPS origins", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `https://localhost:${s.squidTls}`
        const tls = { proxyTls: { ca: s.ca } }
        assert.strictEqual(yield* getVia(`${s.http.url}/tls-proxy`, { all }, tls), "hello from /tls-proxy")
        assert.strictEqual(yield* getVia(`${s.https.url}/tls-in-tls`, { all }, tls), "hello from /tls-in-tls")
        yield* logged("squid/access.log", `GET ${s.http.url}/tls-proxy`)
        yield* logged("squid/access.log", `CONNECT localhost:${s.https.port}`)
      })
    )

    it.effect("fails with a ProxyConnectionError naming the proxy when its certificate is not trusted", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `https://${USER}:${enc(PASSWORD)}@localhost:${s.squidTls}`
        // No proxyTls (Node's trust store), then a CA that signed nothing here; forwarded and tunnelled.
        for (const nodeOptions of [{}, { proxyTls: { ca: s.otherCa } }]) {
          for (const url of [`${s.http.url}/untrusted-proxy`, `${s.https.url}/untrusted-proxy`]) {
            const error = failureOf(yield* Effect.exit(getVia(url, { all }, nodeOptions)))
            assert.instanceOf(error, Proxy.ProxyConnectionError)
            const e = error as Proxy.ProxyConnectionError
            assert.strictEqual(e.proxy, `https://${USER}:<redacted>@localhost:${s.squidTls}`)
            assert.match(e.reason, /^TLS to the proxy failed: .*certificate/)
            assert.isUndefined(e.status)
            assertNoSecret(e.message)
          }
        }
        assert.isUndefined(s.http.seen.find((r) => r.path === "/untrusted-proxy"))
        assert.isUndefined(s.https.seen.find((r) => r.path === "/untrusted-proxy"))
      })
    )

    it.effect("keeps a certificate failure with the origin, through a trusted proxy, the origin's TransportError", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const nodeOptions = { proxyTls: { ca: s.ca }, originTls: { ca: s.otherCa } }
        const exit = yield* Effect.exit(
          getVia(`${s.https.url}/untrusted-origin-tls`, { all: `https://localhost:${s.squidTls}` }, nodeOptions)
        )
        const error = failureOf(exit)
        assert.isFalse(Proxy.isProxyError(error), String(error))
        assert.strictEqual((error as { reason?: { _tag: string } }).reason?._tag, "TransportError")
        assert.include(String((error as { reason?: { cause?: unknown } }).reason?.cause), "certificate")
        assert.isUndefined(s.https.seen.find((r) => r.path === "/untrusted-origin-tls"))
      })
    )
  })

  describe("https:// proxy on an IPv6 literal", () => {
    it.effect("verifies its certificate against the address (IP SAN ::1), forwarded and tunnelled", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const targets: Array<string> = []
        const port = yield* tlsProxyOnV6(targets)
        const all = `https://[::1]:${port}`
        const tls = { proxyTls: { ca: s.ca } }
        assert.strictEqual(yield* getVia(`${s.http.url}/v6-tls-proxy`, { all }, tls), "via the TLS proxy on ::1")
        assert.strictEqual(yield* getVia(`${s.https.url}/v6-tls-tunnel`, { all }, tls), "hello from /v6-tls-tunnel")
        assert.deepStrictEqual(targets, [`${s.http.url}/v6-tls-proxy`, `CONNECT localhost:${s.https.port}`])
      }).pipe(Effect.scoped)
    )
  })

  describe("tinyproxy", () => {
    it.effect("forwards HTTP and tunnels HTTPS (tinyproxy logs both)", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `http://127.0.0.1:${s.tinyOpen}`
        assert.strictEqual(yield* getVia(`${s.http.url}/tiny-plain`, { all }), "hello from /tiny-plain")
        assert.strictEqual(yield* getVia(`${s.https.url}/tiny-tls`, { all }), "hello from /tiny-tls")
        yield* logged("tinyproxy-open.log", `GET ${s.http.url}/tiny-plain`)
        yield* logged("tinyproxy-open.log", `CONNECT localhost:${s.https.port}`)
      })
    )

    it.effect("authenticates, and maps tinyproxy's 401 on CONNECT to a ProxyAuthenticationError", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const good = `http://${USER}:${TINY_PASSWORD}@127.0.0.1:${s.tinyAuth}`
        assert.strictEqual(yield* getVia(`${s.https.url}/tiny-auth`, { all: good }), "hello from /tiny-auth")
        const bad = `http://${USER}:nope@127.0.0.1:${s.tinyAuth}`
        const error = failureOf(yield* Effect.exit(getVia(`${s.https.url}/tiny-wrong`, { all: bad })))
        assert.instanceOf(error, Proxy.ProxyAuthenticationError)
        assert.include((error as Proxy.ProxyAuthenticationError).reason, "401")
      })
    )

    it.effect("passes tinyproxy's 401 on plain HTTP through as a response; tunnelHttp makes it a proxy error", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const bad = `http://${USER}:nope@127.0.0.1:${s.tinyAuth}`
        // Forwarded, the proxy's 401 looks like one from the origin: a StatusCodeError, not a proxy error.
        const error = failureOf(yield* Effect.exit(getVia(`${s.http.url}/tiny-wrong-plain`, { all: bad })))
        assert.isFalse(Proxy.isProxyError(error))
        const reason = (error as { reason?: { _tag: string; response?: { status: number } } }).reason
        assert.strictEqual(reason?._tag, "StatusCodeError")
        assert.strictEqual(reason?.response?.status, 401)
        // Through CONNECT, only the proxy can have answered.
        const tunnelled = failureOf(
          yield* Effect.exit(getVia(`${s.http.url}/tiny-wrong-plain`, { all: bad }, { tunnelHttp: true }))
        )
        assert.instanceOf(tunnelled, Proxy.ProxyAuthenticationError)
        assert.isUndefined(s.http.seen.find((r) => r.path === "/tiny-wrong-plain"))
        const good = `http://${USER}:${TINY_PASSWORD}@127.0.0.1:${s.tinyAuth}`
        const body = yield* getVia(`${s.http.url}/tiny-tunnel-plain`, { all: good }, { tunnelHttp: true })
        assert.strictEqual(body, "hello from /tiny-tunnel-plain")
        yield* logged("tinyproxy-auth.log", `CONNECT 127.0.0.1:${s.http.port}`)
      })
    )
  })

  describe("batches", () => {
    // tinyproxy 1.11 closes each client connection after its response without saying so (no
    // `Connection: close`), and undici may write the next request on it before the close arrives:
    // that item fails with "other side closed" (seen once in 24). It is a transport error the
    // default policy retries, so tinyproxy's batch runs with two quick retries; the others with
    // none.
    it.effect("send every item through squid, tinyproxy and microsocks, HTTP and HTTPS, in order", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const proxies = {
          squid: `http://127.0.0.1:${s.squidOpen}`,
          tinyproxy: `http://127.0.0.1:${s.tinyOpen}`,
          microsocks: `socks5h://127.0.0.1:${s.socksOpen}`
        }
        for (const [name, all] of Object.entries(proxies)) {
          const paths = Array.from({ length: 24 }, (_, i) => `/batch-${name}-${i}`)
          const urls = paths.map((path, i) => `${i % 2 === 0 ? s.http.url : s.https.url}${path}`)
          const retry = Retry.layer(name === "tinyproxy" ? { retries: 2, baseDelay: "1 millis" } : { retries: 0 })
          const results = yield* Fanout.allSettled(urls, { concurrency: 4, read: (response) => response.text }).pipe(
            Effect.provide(Layer.merge(client({ all }), retry))
          )
          assert.deepStrictEqual(
            results.map((result) => (Result.isSuccess(result) ? result.success : String(result.failure))),
            paths.map((path) => `hello from ${path}`),
            name
          )
          const defaultRead = yield* Fanout.allSettled(urls, { concurrency: 4 }).pipe(
            Effect.provide(Layer.merge(client({ all }), retry))
          )
          assert.deepStrictEqual(
            defaultRead.map((result) =>
              Result.isSuccess(result) ? new TextDecoder().decode(result.success) : "failed"
            ),
            paths.map((path) => `hello from ${path}`),
            name
          )
        }
      })
    )
  })

  describe("SOCKS5 (microsocks)", () => {
    it.effect("carries HTTP and HTTPS through socks5h (microsocks logs the connections)", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `socks5h://127.0.0.1:${s.socksOpen}`
        assert.strictEqual(yield* getVia(`${s.http.url}/socks-plain`, { all }), "hello from /socks-plain")
        assert.strictEqual(yield* getVia(`${s.https.url}/socks-tls`, { all }), "hello from /socks-tls")
        yield* logged("socks-open.log", `connected to 127.0.0.1:${s.http.port}`)
        yield* logged("socks-open.log", `connected to localhost:${s.https.port}`)
      })
    )

    it.effect("authenticates with username/password, and rejects a wrong one with a ProxyAuthenticationError", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const good = `socks5://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.socksAuth}`
        assert.strictEqual(yield* getVia(`${s.https.url}/socks-auth`, { all: good }), "hello from /socks-auth")
        const bad = `socks5://${USER}:wrong@127.0.0.1:${s.socksAuth}`
        const error = failureOf(yield* Effect.exit(getVia(`${s.http.url}/socks-wrong`, { all: bad })))
        assert.instanceOf(error, Proxy.ProxyAuthenticationError)
        assert.strictEqual(
          (error as Proxy.ProxyAuthenticationError).proxy,
          `socks5://${USER}:<redacted>@127.0.0.1:${s.socksAuth}`
        )
      })
    )

    it.effect("resolves names locally for socks5 (the proxy gets the address) and remotely for socks5h", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const body = yield* getVia(`${s.https.url}/socks-local-dns`, { all: `socks5://127.0.0.1:${s.socksOpen}` })
        assert.strictEqual(body, "hello from /socks-local-dns")
        yield* logged("socks-open.log", `connected to 127.0.0.1:${s.https.port}`)
        // The name survives as Host (and as the TLS server name the certificate was checked against).
        const seen = s.https.seen.find((r) => r.path === "/socks-local-dns")
        assert.strictEqual(seen?.headers.host, `localhost:${s.https.port}`)
      })
    )

    it.effect("reaches a SOCKS5 proxy on an IPv6 literal", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const body = yield* getVia(`${s.https.url}/socks-v6`, { all: `socks5h://[::1]:${s.socksV6}` })
        assert.strictEqual(body, "hello from /socks-v6")
        yield* logged("socks-v6.log", `connected to localhost:${s.https.port}`)
      })
    )

    it.effect("reaches an IPv6-literal origin, handing the proxy the address without brackets", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        for (const scheme of ["socks5h", "socks5"]) {
          const body = yield* getVia(`${s.httpV6.url}/v6-origin-${scheme}`, {
            all: `${scheme}://127.0.0.1:${s.socksOpen}`
          })
          assert.strictEqual(body, `hello from /v6-origin-${scheme}`)
        }
      })
    )

    it.effect("bounds SOCKS5 connections by connectionsPerOrigin and keeps them alive (counted at the origin)", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `socks5h://127.0.0.1:${s.socksOpen}`
        const connections = (prefix: string) =>
          new Set(s.http.seen.filter((r) => r.path.startsWith(prefix)).map((r) => r.remotePort)).size
        // Eight requests at once, then two more one after the other, on one client.
        const burst = (prefix: string) =>
          Effect.gen(function* () {
            const get = (i: number) => Http.getText(`${s.http.url}${prefix}${i}`)
            yield* Effect.all([0, 1, 2, 3, 4, 5, 6, 7].map(get), { concurrency: "unbounded" })
            const before = connections(prefix)
            yield* get(8)
            yield* get(9)
            return { before, after: connections(prefix) }
          })
        const bounded = yield* burst("/socks-pool-2-").pipe(
          Effect.provide(client({ all }, { connectionsPerOrigin: 2 }))
        )
        assert.isAtMost(bounded.before, 2)
        assert.strictEqual(bounded.after, bounded.before, "later requests reuse the kept-alive connections")
        // Without the bound, the same burst opens more: the assertion above can fail.
        const unbounded = yield* burst("/socks-pool-any-").pipe(Effect.provide(client({ all })))
        assert.isAbove(unbounded.before, 2)
      })
    )

    // Found by review: the SOCKS5 route offered origins no ALPN, so `http2: true` silently gave
    // HTTP/1.1 through SOCKS5 (a connection per request in flight) while it gave HTTP/2 direct and
    // through CONNECT: the same program spoke another protocol under another layer.
    it.effect("offers HTTP/2 inside the tunnel with http2: true, for socks5h and socks5, closed with the layer", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const pki = (name: string) => readFileSync(join(s.dir, "pki", name))
        const { server, versions, sessions } = h2Origin(pki("server.crt"), pki("server.key"))
        const port = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<number>((resolve) =>
                server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))
              )
          ),
          () => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
        )
        for (const scheme of ["socks5h", "socks5"]) {
          versions.length = 0
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(
            client({ all: `${scheme}://127.0.0.1:${s.socksOpen}` }, { http2: true }),
            scope
          )
          const bodies = yield* Effect.all(
            Array.from({ length: 4 }, () => Http.getText(`https://localhost:${port}/`)),
            { concurrency: "unbounded" }
          ).pipe(Effect.provide(context))
          assert.deepStrictEqual(bodies, ["ok", "ok", "ok", "ok"])
          assert.deepStrictEqual(versions, ["2.0", "2.0", "2.0", "2.0"], scheme)
          assert.strictEqual(sessions.size, 1, `${scheme}: the requests share one connection`)
          yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("3 seconds"))
          // The server's session closes once the client's connection has.
          yield* Effect.promise(
            () =>
              new Promise<void>((resolve) => {
                if (sessions.size === 0) return resolve()
                for (const session of sessions) session.once("close", () => sessions.size === 0 && resolve())
              })
          ).pipe(Effect.timeout("2 seconds"))
          assert.strictEqual(sessions.size, 0, `${scheme}: closed with the layer`)
        }
      }).pipe(Effect.scoped)
    )
  })

  describe("routing", () => {
    it.effect("sends a NO_PROXY host direct: the proxy logs nothing, the origin sees no Via", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `http://127.0.0.1:${s.squidOpen}`
        const body = yield* getVia(`${s.http.url}/direct`, { all, noProxy: `example.com, 127.0.0.0/8:${s.http.port}` })
        assert.strictEqual(body, "hello from /direct")
        assert.isUndefined(s.http.seen.find((r) => r.path === "/direct")?.headers.via)
        // squid logs in completion order: once a later proxied request shows up, /direct would have too.
        yield* getVia(`${s.http.url}/after-direct`, { all })
        yield* logged("squid/access.log", "/after-direct")
        assert.notInclude(s.log("squid/access.log"), "/direct ")
      })
    )

    it.effect("sends an IPv4-mapped IPv6 origin direct when an IPv4 NO_PROXY range covers it", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const all = `http://127.0.0.1:${s.squidOpen}`
        // The same origin, 127.0.0.1, reached through its IPv4-mapped IPv6 address.
        const mapped = `http://[::ffff:127.0.0.1]:${s.http.port}`
        const body = yield* getVia(`${mapped}/mapped-direct`, { all, noProxy: "127.0.0.0/8" })
        assert.strictEqual(body, "hello from /mapped-direct")
        assert.isUndefined(s.http.seen.find((r) => r.path === "/mapped-direct")?.headers.via)
        yield* getVia(`${s.http.url}/after-mapped-direct`, { all })
        yield* logged("squid/access.log", "/after-mapped-direct")
        assert.notInclude(s.log("squid/access.log"), "/mapped-direct ")
      })
    )

    it.effect("applies rules in order before the per-scheme proxies", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const options: Proxy.Options = {
          all: `http://127.0.0.1:${s.squidOpen}`,
          rules: [
            { match: "localhost", via: `socks5h://127.0.0.1:${s.socksOpen}` },
            { match: "localhost", via: "direct" }
          ]
        }
        const tunnels = () => s.log("socks-open.log").split(`connected to localhost:${s.https.port}`).length - 1
        const before = tunnels()
        assert.strictEqual(yield* getVia(`${s.https.url}/rule-socks`, options), "hello from /rule-socks")
        assert.strictEqual(yield* getVia(`${s.http.url}/rule-squid`, options), "hello from /rule-squid")
        assert.strictEqual(tunnels(), before + 1)
        yield* logged("squid/access.log", `${s.http.url}/rule-squid`)
        assert.notInclude(s.log("squid/access.log"), "rule-socks")
      })
    )

    it.effect("shows each request's route on its client span as proxy.route, without credentials", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const routes: Array<unknown> = []
        const tracer = onSpanEnd((span) => {
          if (span.attributes.has("proxy.route")) routes.push([span.kind, span.attributes.get("proxy.route")])
        })
        const options = { all: `http://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`, noProxy: "localhost" }
        yield* Effect.all([
          getVia(`${s.http.url}/span-proxied`, options).pipe(Effect.withSpan("proxied")),
          getVia(`http://localhost:${s.http.port}/span-direct`, options).pipe(Effect.withSpan("direct"))
        ]).pipe(Effect.provideService(Tracer.Tracer, tracer))
        // On each request's own client span, not on the caller's (which may run many requests).
        assert.deepStrictEqual(routes, [
          ["client", `http://${USER}:<redacted>@127.0.0.1:${s.squidAuth}`],
          ["client", "direct"]
        ])
      })
    )

    it.effect("reads HTTP_PROXY/https_proxy/NO_PROXY through Config, lower case winning", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const env = {
          HTTPS_PROXY: "http://127.0.0.1:1",
          https_proxy: `http://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`,
          NO_PROXY: "internal.example"
        }
        const body = yield* Http.getText(`${s.https.url}/from-env`).pipe(
          Effect.provide(
            NodeProxy.layerConfig({ proxyLoopback: true, originTls: { ca: s.ca } }).pipe(
              Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
            )
          )
        )
        assert.strictEqual(body, "hello from /from-env")
      })
    )
  })

  describe("credentials at rest", () => {
    it.effect("never show in a deep inspection or JSON of the client and its dispatcher, while they work", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const squid = `http://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`
        const socks = `socks5://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.socksAuth}`
        const cases: Array<[Proxy.Options, NodeProxy.Options]> = [
          [{ all: squid }, {}], // plain HTTP forwarded, HTTPS through CONNECT
          [{ all: squid }, { tunnelHttp: true }],
          [{ all: socks }, {}]
        ]
        for (const [options, nodeOptions] of cases) {
          const config = yield* Proxy.make({ proxyLoopback: true, ...options })
          let dispatcher: unknown
          const withDispatcher = NodeHttpClient.layerWith((agent) => {
            dispatcher = NodeProxy.makeDispatcher(config, agent, { originTls: { ca: s.ca }, ...nodeOptions })
            return dispatcher as ReturnType<typeof NodeProxy.makeDispatcher>
          })
          // The layer's client, and a client on the dispatcher makeDispatcher hands out.
          for (const layer of [client(options, nodeOptions), withDispatcher]) {
            yield* Effect.gen(function* () {
              // Authenticated requests on every path, so that each pool and tunnel exists.
              assert.strictEqual(yield* Http.getText(`${s.http.url}/at-rest`), "hello from /at-rest")
              assert.strictEqual(yield* Http.getText(`${s.https.url}/at-rest-tls`), "hello from /at-rest-tls")
              // Looked at while the layer is alive: pools and keep-alive connections included.
              for (const value of [yield* HttpClient.HttpClient, dispatcher]) {
                for (const text of renderings(value)) assertNoSecret(text)
              }
            }).pipe(Effect.provide(Layer.merge(layer, Retry.layer({ retries: 0 }))))
          }
        }
      })
    )
  })

  describe("lifecycle", () => {
    it.effect("closes every route's connections when the layer's scope closes (counted at the origins)", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        // A tunnel through squid, one through microsocks, and direct: a tunnel's connection at the origin
        // lives as long as ours to the proxy. Keep-alive long enough that only closing ends them. (A
        // forwarded request's connection at the origin is the proxy's own: see NodeProxy.test.ts.)
        const options: Proxy.Options = {
          rules: [
            { match: `localhost:${s.https.port}`, via: `http://127.0.0.1:${s.squidOpen}` },
            { match: "127.0.0.1", via: `socks5h://127.0.0.1:${s.socksOpen}` },
            { match: "localhost", via: "direct" }
          ]
        }
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(client(options, { keepAliveTimeout: "60 seconds" }), scope)
        const requests = [
          [s.https, `${s.https.url}/close-squid`],
          [s.http, `${s.http.url}/close-socks`],
          [s.http, `http://localhost:${s.http.port}/close-direct`]
        ] as const
        const open: Array<[Origin, number | undefined]> = []
        for (const [origin, url] of requests) {
          const path = new URL(url).pathname
          assert.strictEqual(yield* Http.getText(url).pipe(Effect.provide(context)), `hello from ${path}`)
          const remotePort = origin.seen.find((r) => r.path === path)?.remotePort
          assert.isTrue(origin.isOpen(remotePort), `${path}: the connection is kept alive`)
          open.push([origin, remotePort])
        }
        assert.strictEqual(new Set(open.map(([, port]) => port)).size, requests.length)
        yield* Scope.close(scope, Exit.void)
        yield* Effect.promise(() => Promise.all(open.map(([origin, port]) => origin.closed([port])))).pipe(
          Effect.timeout("2 seconds")
        )
      })
    )

    // Found by review: a tunnel being opened ran on once its request was interrupted (undici gives
    // up a connection attempt no request waits for only through the socket its connector returns,
    // and the proxy connectors returned none): with an origin that never answers the TLS handshake
    // inside the tunnel, the tunnel stayed open until connectTimeout, a socket at the proxy and the
    // origin for each interrupted request.
    it.effect("ends a tunnel whose TLS handshake with the origin hangs once its request is interrupted", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const origin = yield* silentTlsOrigin
        let greetings = 0
        for (const proxy of [`http://127.0.0.1:${s.squidOpen}`, `socks5h://127.0.0.1:${s.socksOpen}`]) {
          // Open throughout: closing it would end the tunnel anyway.
          const context = yield* Layer.build(
            Layer.merge(client({ all: proxy }, { connectTimeout: "30 seconds" }), Retry.layer({ retries: 0 }))
          )
          const exit = yield* Effect.gen(function* () {
            const request = yield* Effect.forkChild(
              Http.getText(`https://127.0.0.1:${origin.port}/`).pipe(
                Effect.timeout("1 second"),
                Effect.provideContext(context)
              )
            )
            // The proxy answered (CONNECT 200, or SOCKS5 success): the ClientHello reached the origin.
            yield* origin.greeted(++greetings)
            yield* TestClock.adjust("1 second")
            return yield* Fiber.await(request)
          }).pipe(Effect.provide(TestClock.layer()))
          assert.strictEqual((failureOf(exit) as { _tag?: string })._tag, "TimeoutError", proxy)
          // Long before the connect timeout, with the layer still open.
          yield* origin.closed.pipe(Effect.timeout("5 seconds"))
          // The route still works.
          assert.strictEqual(
            yield* Http.getText(`${s.https.url}/after-interrupt`).pipe(Effect.provideContext(context)),
            "hello from /after-interrupt"
          )
        }
      }).pipe(Effect.scoped)
    )
  })

  describe("failures", () => {
    it.effect("fails with a ProxyConnectionError naming the proxy (redacted) when it is down, for each kind", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const dead = 1 // nothing listens on port 1 of loopback
        for (const [proxy, url] of [
          [`http://${USER}:${enc(PASSWORD)}@127.0.0.1:${dead}`, `${s.http.url}/down`],
          [`http://${USER}:${enc(PASSWORD)}@127.0.0.1:${dead}`, `${s.https.url}/down`],
          [`socks5h://${USER}:${enc(PASSWORD)}@127.0.0.1:${dead}`, `${s.https.url}/down`]
        ] as const) {
          const error = failureOf(yield* Effect.exit(getVia(url, { all: proxy })))
          assert.instanceOf(error, Proxy.ProxyConnectionError)
          const e = error as Proxy.ProxyConnectionError
          assert.include(e.message, `${USER}:<redacted>@127.0.0.1:${dead}`)
          assertNoSecret(e.message)
        }
      })
    )

    it.effect("keeps credentials out of errors, logs and spans", () =>
      Effect.gen(function* () {
        const s = yield* ProxyServers
        const lines: Array<string> = []
        const spans: Array<string> = []
        const logger = Logger.make((options) => {
          lines.push(Logger.formatLogFmt.log(options))
        })
        const tracer = onSpanEnd((span) => {
          spans.push(JSON.stringify({ name: span.name, attributes: Object.fromEntries(span.attributes) }))
        })
        const good = `http://${USER}:${enc(PASSWORD)}@127.0.0.1:${s.squidAuth}`
        const wrong = `socks5://${USER}:wrong-${enc(PASSWORD)}@127.0.0.1:${s.socksAuth}`
        const call = (url: string, all: string) =>
          Http.getText(url).pipe(
            Effect.provide(client({ all })),
            Effect.catchCause((cause) => Effect.logError("request failed", cause)),
            Effect.withSpan("test-call")
          )
        yield* Effect.all([
          call(`${s.https.url}/observed`, good),
          call(`${s.http.url}/observed`, wrong),
          call(`${s.http.url}/observed`, `http://${USER}:${enc(PASSWORD)}@127.0.0.1:1`)
        ]).pipe(
          Effect.provide(Logger.layer([logger])),
          Effect.provideService(References.MinimumLogLevel, "Debug"),
          Effect.provideService(Tracer.Tracer, tracer)
        )
        const all = [...lines, ...spans].join("\n")
        // The test must see what it claims to check: the redacted labels and the failures.
        assert.include(all, `${USER}:<redacted>@127.0.0.1:${s.squidAuth}`)
        assert.include(all, "ProxyAuthenticationError")
        assert.include(all, "ProxyConnectionError")
        assert.include(all, "proxy.route")
        assertNoSecret(all)
        assert.notInclude(all, "wrong-")
      })
    )
  })
})
