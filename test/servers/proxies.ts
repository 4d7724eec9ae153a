// Starts the real proxies of servers.sh (squid, tinyproxy, microsocks) on kernel-chosen
// loopback ports in a temp dir, plus an HTTP and an HTTPS origin (node:http / node:https,
// with the CA servers.sh generates) that record what they see. Everything is stopped when
// the layer's scope closes, whether the tests passed or not. A third origin listens on ::1.
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import type { AddressInfo, Server, Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { Context, Effect, Layer } from "effect"

const run = promisify(execFile)
const script = new URL("./servers.sh", import.meta.url).pathname

export const USER = "alice"
/** Contains characters that need percent-encoding in a URL, on purpose. */
export const PASSWORD = "s3cr3t-P@ss:w0rd"
/** tinyproxy's BasicAuth line cannot hold whitespace, '@' or ':'. */
export const TINY_PASSWORD = "tinyS3cret"

export interface Seen {
  readonly path: string
  readonly headers: IncomingMessage["headers"]
  /** The client port of the connection it came on: one per connection. */
  readonly remotePort: number | undefined
}

export interface Origin {
  readonly url: string
  readonly port: number
  /** Requests seen, with the headers each arrived with. */
  readonly seen: Array<Seen>
  /** Whether the connection from this client port is open. */
  readonly isOpen: (remotePort: number | undefined) => boolean
  /** Resolves once none of the connections from these client ports is open. */
  readonly closed: (remotePorts: ReadonlyArray<number | undefined>) => Promise<void>
}

export interface Servers {
  readonly dir: string
  readonly squidOpen: number
  readonly squidAuth: number
  /** squid's https_port (TLS to the proxy, certificate from the test CA for localhost). */
  readonly squidTls: number
  readonly tinyOpen: number
  readonly tinyAuth: number
  readonly socksOpen: number
  readonly socksAuth: number
  /** microsocks on ::1. */
  readonly socksV6: number
  readonly ca: string
  /** A CA that signed nothing here: trusting only it must fail every TLS handshake. */
  readonly otherCa: string
  readonly http: Origin
  readonly https: Origin
  /** An HTTP origin on ::1. */
  readonly httpV6: Origin
  /** The current text of a server's log (`squid/access.log`, `tinyproxy-open.log`, ...). */
  readonly log: (name: string) => string
  /**
   * The log once it contains `text` (polled for up to 3 s; the log as it is then, otherwise).
   * squid writes a CONNECT line only when the tunnel closes, which is after the response.
   */
  readonly logWith: (name: string, text: string) => Effect.Effect<string>
}

export class ProxyServers extends Context.Service<ProxyServers, Servers>()("volley/test/ProxyServers") {}

const listen = (server: Server, host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port))
  })

const close = (server: Server): Promise<void> =>
  new Promise((resolve) => {
    server.close(() => resolve())
    ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
  })

// Proxy ports are picked here and bound by the proxies a moment later. A port from the
// kernel's ephemeral range (what `listen(0)` hands out) can meanwhile become the source port
// of one of the many outgoing connections other test files make, and the proxy then fails to
// bind it. So ports come from below that range, each checked free on both loopbacks.
const ephemeralStart = (() => {
  try {
    return Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768
  } catch {
    return 32768
  }
})()

const bindable = (port: number, host: string): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createHttpServer()
    server.once("error", () => resolve(false))
    server.listen(port, host, () => server.close(() => resolve(true)))
  })

const freePort = async (taken: ReadonlySet<number>): Promise<number> => {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (ephemeralStart - 10_000))
    if (!taken.has(port) && (await bindable(port, "127.0.0.1")) && (await bindable(port, "::1"))) return port
  }
}

const handler = (seen: Array<Seen>) => (req: IncomingMessage, res: ServerResponse) => {
  seen.push({ path: req.url ?? "/", headers: req.headers, remotePort: req.socket.remotePort })
  res.writeHead(200, { "content-type": "text/plain" }).end(`hello from ${req.url}`)
}

// An origin around `server`, tracking its open connections by client port.
const origin = (server: Server, url: string, port: number, seen: Array<Seen>): Origin => {
  const open = new Set<number | undefined>()
  const changed: Array<() => void> = []
  server.on("connection", (socket: Socket) => {
    const remotePort = socket.remotePort
    open.add(remotePort)
    socket.on("close", () => {
      open.delete(remotePort)
      for (const wake of changed.splice(0)) wake()
    })
  })
  const closed = async (remotePorts: ReadonlyArray<number | undefined>) => {
    while (remotePorts.some((p) => open.has(p))) await new Promise<void>((resolve) => changed.push(resolve))
  }
  return { url, port, seen, isOpen: (remotePort) => open.has(remotePort), closed }
}

const names = [
  "P_SQUID_OPEN",
  "P_SQUID_AUTH",
  "P_SQUID_TLS",
  "P_TINY_OPEN",
  "P_TINY_AUTH",
  "P_SOCKS_OPEN",
  "P_SOCKS_AUTH",
  "P_SOCKS_V6"
] as const

const startOnce = async () => {
  const dir = mkdtempSync(join(tmpdir(), "volley-proxies-"))
  const taken = new Set<number>()
  const ports = {} as Record<(typeof names)[number], number>
  for (const name of names) {
    ports[name] = await freePort(taken)
    taken.add(ports[name])
  }
  const env = { ...process.env, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) }
  try {
    await run("bash", [script, "start", dir], {
      env: { ...env, PROXY_USER: USER, PROXY_PASS: PASSWORD, TINY_PASS: TINY_PASSWORD, WATCH_PID: String(process.pid) }
    })
  } catch (error) {
    await run("bash", [script, "stop", dir]).catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  return { dir, ports }
}

// A port can still be taken between the check and the proxy's bind: try again with new ports.
const start = async () => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce()
    } catch (error) {
      if (attempt === 3) throw error
      console.error(`proxy servers did not start (attempt ${attempt}), retrying with other ports: ${error}`)
    }
  }
}

export const layer = Layer.effect(
  ProxyServers,
  Effect.gen(function* () {
    const { dir, ports } = yield* Effect.acquireRelease(
      Effect.promise(() => start()),
      ({ dir }) =>
        Effect.promise(async () => {
          await run("bash", [script, "stop", dir]).catch(() => undefined)
          rmSync(dir, { recursive: true, force: true })
        })
    )
    const ca = readFileSync(join(dir, "pki/ca.crt"), "utf8")
    const otherCa = readFileSync(join(dir, "pki/other-ca.crt"), "utf8")
    const httpSeen: Array<Seen> = []
    const httpsSeen: Array<Seen> = []
    const httpV6Seen: Array<Seen> = []
    const httpServer = createHttpServer(handler(httpSeen))
    const httpsServer = createHttpsServer(
      { cert: readFileSync(join(dir, "pki/server.crt")), key: readFileSync(join(dir, "pki/server.key")) },
      handler(httpsSeen)
    )
    const httpV6Server = createHttpServer(handler(httpV6Seen))
    const [httpPort, httpsPort, httpV6Port] = yield* Effect.acquireRelease(
      Effect.promise(() => Promise.all([listen(httpServer), listen(httpsServer), listen(httpV6Server, "::1")])),
      () => Effect.promise(() => Promise.all([close(httpServer), close(httpsServer), close(httpV6Server)]))
    )
    const log = (name: string) => {
      try {
        return readFileSync(join(dir, name), "utf8")
      } catch {
        return ""
      }
    }
    const logWith = (name: string, text: string) =>
      Effect.promise(async () => {
        for (let i = 0; i < 150 && !log(name).includes(text); i++) await new Promise((r) => setTimeout(r, 20))
        return log(name)
      })
    return ProxyServers.of({
      dir,
      squidOpen: ports.P_SQUID_OPEN,
      squidAuth: ports.P_SQUID_AUTH,
      squidTls: ports.P_SQUID_TLS,
      tinyOpen: ports.P_TINY_OPEN,
      tinyAuth: ports.P_TINY_AUTH,
      socksOpen: ports.P_SOCKS_OPEN,
      socksAuth: ports.P_SOCKS_AUTH,
      socksV6: ports.P_SOCKS_V6,
      ca,
      otherCa,
      http: origin(httpServer, `http://127.0.0.1:${httpPort}`, httpPort, httpSeen),
      https: origin(httpsServer, `https://localhost:${httpsPort}`, httpsPort, httpsSeen),
      httpV6: origin(httpV6Server, `http://[::1]:${httpV6Port}`, httpV6Port, httpV6Seen),
      log,
      logWith
    })
  })
)
