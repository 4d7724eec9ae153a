// `pnpm example examples/proxy.ts [HTTP_PROXY_URL] [SOCKS5_PROXY_URL]`
//
// One program, three layers: the same `Http.getText` runs direct, through an HTTP proxy and
// through a SOCKS5 proxy; only the provided layer changes. The origin is embedded (127.0.0.1,
// a free port) and reports the `Via` header it saw. Without proxy URLs (arguments or
// EXAMPLE_HTTP_PROXY / EXAMPLE_SOCKS_PROXY), the example starts tinyproxy and microsocks on
// loopback if they are installed (`apt-get install tinyproxy microsocks`), else skips that layer.
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:http"
import { type AddressInfo, connect } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { NodeRuntime } from "@effect/platform-node"
import { Http, Proxy } from "@volley/core"
import { NodeHttpClient, NodeProxy } from "@volley/node"
import { Console, Effect, Layer } from "effect"
import { freePort } from "../packages/cluster/test/support/ports.ts"

const program = (origin: string) =>
  Http.getText(`${origin}/hello`).pipe(Proxy.unwrapErrors, Effect.timeout("5 seconds"))

// Proxies here run on loopback, which is direct by default: opt in.
const through = (url: string) =>
  Layer.unwrap(Effect.map(Proxy.make({ all: url, proxyLoopback: true }), (config) => NodeProxy.layer(config)))

const listening = async (port: number) => {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1", () => {
        socket.end()
        resolve(true)
      })
      socket.on("error", () => resolve(false))
    })
    if (ok) return true
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return false
}

// Starts `command` in the foreground for the enclosing scope; undefined if it is not installed.
const local = (command: string, args: (port: number, dir: string) => Array<string>, scheme: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const port = await freePort()
      const dir = mkdtempSync(join(tmpdir(), "volley-example-"))
      const child = spawn(command, args(port, dir), { stdio: "ignore" })
      const started = await new Promise<boolean>((resolve) => {
        child.once("error", () => resolve(false))
        child.once("spawn", () => resolve(true))
      })
      return { child, dir, url: started && (await listening(port)) ? `${scheme}://127.0.0.1:${port}` : undefined }
    }),
    ({ child, dir }) =>
      Effect.sync(() => {
        if (child.pid !== undefined && child.exitCode === null) child.kill("SIGTERM")
        rmSync(dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ url }) => url))

const tinyproxy = local(
  "tinyproxy",
  (port, dir) => {
    const conf = join(dir, "tinyproxy.conf")
    writeFileSync(conf, `Port ${port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\n`)
    return ["-d", "-c", conf]
  },
  "http"
)
const microsocks = local("microsocks", (port) => ["-i", "127.0.0.1", "-p", String(port)], "socks5h")

const origin = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<ReturnType<typeof createServer>>((resolve) => {
        const server = createServer((req, res) => res.end(`hello (Via: ${req.headers.via ?? "none"})`))
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
  ),
  (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

const main = Effect.gen(function* () {
  const url = yield* origin
  const httpProxy = process.argv[2] ?? process.env.EXAMPLE_HTTP_PROXY ?? (yield* tinyproxy)
  const socksProxy = process.argv[3] ?? process.env.EXAMPLE_SOCKS_PROXY ?? (yield* microsocks)
  const layers = [
    ["direct", NodeHttpClient.layer()],
    ["HTTP proxy", httpProxy === undefined ? undefined : through(httpProxy)],
    ["SOCKS5", socksProxy === undefined ? undefined : through(socksProxy)]
  ] as const
  for (const [name, layer] of layers) {
    if (layer === undefined) {
      yield* Console.log(`${name.padEnd(10)} skipped: pass a proxy URL or install it (see the top of this file)`)
      continue
    }
    const text = yield* program(url).pipe(
      Effect.provide(layer),
      Effect.catch((error) => Effect.succeed(`failed: ${error.message}`))
    )
    yield* Console.log(`${name.padEnd(10)} ${text}`)
  }
}).pipe(Effect.scoped)

NodeRuntime.runMain(main)
