// Starts the real proxies of servers.sh (squid, tinyproxy, microsocks) on kernel-chosen
// loopback ports in a temp dir, plus an HTTP and an HTTPS origin (node:http / node:https,
// with the CA servers.sh generates) that record what they see. Everything is stopped when
// the layer's scope closes, whether the tests passed or not.
import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import type { AddressInfo, Server } from "node:net"
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

export interface Origin {
  readonly url: string
  readonly port: number
  /** Requests seen, with the headers each arrived with. */
  readonly seen: Array<{ readonly path: string; readonly headers: IncomingMessage["headers"] }>
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
  readonly http: Origin
  readonly https: Origin
  /** The current text of a server's log (`squid/access.log`, `tinyproxy-open.log`, ...). */
  readonly log: (name: string) => string
  /**
   * The log once it contains `text` (polled for up to 3 s; the log as it is then, otherwise).
   * squid writes a CONNECT line only when the tunnel closes, which is after the response.
   */
  readonly logWith: (name: string, text: string) => Effect.Effect<string>
}

export class ProxyServers extends Context.Service<ProxyServers, Servers>()("volley/test/ProxyServers") {}

const listen = (server: Server): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port))
  })

const close = (server: Server): Promise<void> =>
  new Promise((resolve) => {
    server.close(() => resolve())
    ;(server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
  })

const freePort = async (): Promise<number> => {
  const server = createHttpServer()
  const port = await listen(server)
  await close(server)
  return port
}

const handler =
  (seen: Array<{ path: string; headers: IncomingMessage["headers"] }>) =>
  (req: IncomingMessage, res: ServerResponse) => {
    seen.push({ path: req.url ?? "/", headers: req.headers })
    res.writeHead(200, { "content-type": "text/plain" }).end(`hello from ${req.url}`)
  }

const start = async () => {
  const dir = mkdtempSync(join(tmpdir(), "volley-proxies-"))
  const ports = {
    P_SQUID_OPEN: await freePort(),
    P_SQUID_AUTH: await freePort(),
    P_SQUID_TLS: await freePort(),
    P_TINY_OPEN: await freePort(),
    P_TINY_AUTH: await freePort(),
    P_SOCKS_OPEN: await freePort(),
    P_SOCKS_AUTH: await freePort(),
    P_SOCKS_V6: await freePort()
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
    const httpSeen: Array<{ path: string; headers: IncomingMessage["headers"] }> = []
    const httpsSeen: Array<{ path: string; headers: IncomingMessage["headers"] }> = []
    const httpServer = createHttpServer(handler(httpSeen))
    const httpsServer = createHttpsServer(
      { cert: readFileSync(join(dir, "pki/server.crt")), key: readFileSync(join(dir, "pki/server.key")) },
      handler(httpsSeen)
    )
    const [httpPort, httpsPort] = yield* Effect.acquireRelease(
      Effect.promise(() => Promise.all([listen(httpServer), listen(httpsServer)])),
      () => Effect.promise(() => Promise.all([close(httpServer), close(httpsServer)]))
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
      http: { url: `http://127.0.0.1:${httpPort}`, port: httpPort, seen: httpSeen },
      https: { url: `https://localhost:${httpsPort}`, port: httpsPort, seen: httpsSeen },
      log,
      logWith
    })
  })
)
