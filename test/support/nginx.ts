// A real nginx (Debian's package) for end-to-end tests: started in the foreground in a temp dir
// on free loopback ports below the ephemeral range (so no outgoing connection takes one between
// the check and nginx's bind), with a TLS port (certificate from a throw-away test CA) and an
// access log that records, per request, the connection number, the protocol and the
// Content-Encoding nginx sent. Stopped by its PID when the scope closes.
import { type ChildProcess, spawn } from "node:child_process"
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createConnection } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { freePort } from "../../packages/cluster/test/support/ports.ts"
import { makePki } from "../../packages/node/test/fixtures/pki.ts"

const NGINX = "/usr/sbin/nginx"
const MODULES = "/usr/lib/nginx/modules"
/** Debian's `libnginx-mod-http-brotli-filter`: `brotli on` when it is installed. */
export const BROTLI_MODULE = `${MODULES}/ngx_http_brotli_filter_module.so`
const ECHO_MODULE = `${MODULES}/ngx_http_echo_module.so`

export interface LogLine {
  /** nginx's connection serial number: one per TCP connection. */
  readonly connection: string
  readonly protocol: string
  readonly uri: string
  readonly status: number
  /** The Content-Encoding nginx sent, or "-". */
  readonly encoding: string
  readonly bodyBytes: number
}

export interface Nginx {
  readonly http: string
  readonly https: string
  readonly ca: string
  readonly brotli: boolean
  readonly echo: boolean
  /** The access log so far, parsed. nginx writes a line when a request ends. */
  readonly log: () => Array<LogLine>
  readonly dir: string
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection(port, "127.0.0.1")
    socket.once("connect", () => resolve(socket.destroy() !== undefined))
    socket.once("error", () => resolve(false))
  })

const waitForPorts = async (ports: ReadonlyArray<number>, child: ChildProcess, dir: string) => {
  const until = Date.now() + 5_000
  while (Date.now() < until) {
    if (child.exitCode !== null) {
      throw new Error(`nginx exited with ${child.exitCode}: ${readFileSync(join(dir, "error.log"), "utf8")}`)
    }
    if ((await Promise.all(ports.map(accepts))).every(Boolean)) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error("nginx did not listen within 5 s")
}

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve()
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      resolve()
    }, 3_000)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    child.kill("SIGTERM")
  })

/**
 * Starts nginx for the enclosing scope. `locations` is the body of both server blocks (plain
 * and TLS with `http2`); `files` are written under `$dir/www` first (served with `alias`/`root`).
 * In `locations`, `@WWW@` is replaced with that directory and `@HTTP@` / `@HTTPS@` with the two
 * origins (`http://127.0.0.1:port`, `https://localhost:port`), so one can redirect to the other.
 */
export const nginx = (locations: string, files: Record<string, string | Uint8Array> = {}) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const dir = mkdtempSync(join(tmpdir(), "volley-nginx-"))
      chmodSync(dir, 0o755)
      const www = join(dir, "www")
      mkdirSync(www)
      mkdirSync(join(dir, "tmp"))
      for (const [name, content] of Object.entries(files)) writeFileSync(join(www, name), content)
      const pki = makePki()
      writeFileSync(join(dir, "server.crt"), pki.serverCert)
      writeFileSync(join(dir, "server.key"), pki.serverKey)
      const brotli = existsSync(BROTLI_MODULE)
      const echo = existsSync(ECHO_MODULE)
      const [http, https] = [await freePort(), await freePort()]
      const body = locations
        .replaceAll("@WWW@", www)
        .replaceAll("@HTTPS@", `https://localhost:${https}`)
        .replaceAll("@HTTP@", `http://127.0.0.1:${http}`)
      writeFileSync(
        join(dir, "nginx.conf"),
        `${brotli ? `load_module ${BROTLI_MODULE};` : ""}
${echo ? `load_module ${ECHO_MODULE};` : ""}
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  log_format volley '$connection $server_protocol $status $sent_http_content_encoding $body_bytes_sent $request_uri';
  access_log ${dir}/access.log volley;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  keepalive_timeout 65s;
  keepalive_requests 100000;
  ssl_certificate ${dir}/server.crt;
  ssl_certificate_key ${dir}/server.key;
  server {
    listen 127.0.0.1:${http};
    listen 127.0.0.1:${https} ssl http2;
    ${body}
  }
}
`
      )
      const child = spawn(NGINX, ["-c", join(dir, "nginx.conf")], { stdio: ["ignore", "ignore", "pipe"] })
      try {
        await waitForPorts([http, https], child, dir)
      } catch (error) {
        await stop(child)
        rmSync(dir, { recursive: true, force: true })
        throw error
      }
      const server: Nginx = {
        http: `http://127.0.0.1:${http}`,
        https: `https://localhost:${https}`,
        ca: pki.ca,
        brotli,
        echo,
        dir,
        log: () => {
          const file = join(dir, "access.log")
          if (!existsSync(file)) return []
          return readFileSync(file, "utf8")
            .split("\n")
            .filter((line) => line !== "")
            .map((line) => {
              const [connection, protocol, status, encoding, bodyBytes, uri] = line.split(" ")
              return {
                connection: connection!,
                protocol: protocol!,
                status: Number(status),
                encoding: encoding!,
                bodyBytes: Number(bodyBytes),
                uri: uri!
              }
            })
        }
      }
      return { child, server }
    }),
    ({ child, server }) =>
      Effect.promise(async () => {
        await stop(child)
        rmSync(server.dir, { recursive: true, force: true })
      })
  ).pipe(Effect.map(({ server }) => server))

/** The access log once it has at least `n` lines (nginx writes each when its request ends). */
export const logWith = (server: Nginx, n: number) =>
  Effect.promise(async () => {
    const until = Date.now() + 3_000
    while (server.log().length < n && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10))
    return server.log()
  })
