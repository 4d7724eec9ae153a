// The origin for the HTTP scenario: nginx (Debian's package, one worker, keep-alive, no
// access log) in a temp dir on a free loopback port, or a node:http child process when nginx
// is not installed. Either way it runs in its own process and is stopped by its PID.
import { type ChildProcess, spawn } from "node:child_process"
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface Origin {
  readonly kind: "nginx" | "node:http"
  readonly version: string
  readonly base: string
  readonly pid: number
  /** Sends SIGTERM to the origin's PID and waits (up to 2 s) for it to exit. */
  readonly stop: () => Promise<void>
}

const NGINX = "/usr/sbin/nginx"
const ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

/** A port the kernel picks on 127.0.0.1, free when this resolves. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const probe = createServer()
    probe.once("error", reject)
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      probe.close(() => resolve(port))
    })
  })

/** Resolves once `port` accepts connections; fails when `child` exits first or after 5 s. */
export const waitForPort = async (port: number, child: ChildProcess) => {
  const until = Date.now() + 5_000
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`origin exited with code ${child.exitCode} before listening`)
    const open = await new Promise<boolean>((resolve) => {
      const socket = createConnection(port, "127.0.0.1")
      socket.once("connect", () => resolve(socket.destroy() !== undefined))
      socket.once("error", () => resolve(false))
    })
    if (open) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`origin did not listen on 127.0.0.1:${port} within 5 s`)
}

const terminate = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return resolve()
    const timer = setTimeout(resolve, 2_000)
    child.once("exit", () => {
      clearTimeout(timer)
      resolve()
    })
    process.kill(child.pid, "SIGTERM")
  })

/**
 * What every benchmark nginx shares: one worker in the foreground, its files under `dir`, and
 * an `http` block that opens with keep-alive for millions of requests; the caller writes the rest
 * of the `http` block and closes it.
 */
export const nginxPreamble = (dir: string) => `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  keepalive_timeout 65s;
  keepalive_requests 10000000;
`

const nginxConfig = (dir: string, port: number, echo: boolean) => `
${echo ? `load_module ${ECHO_MODULE};` : ""}
${nginxPreamble(dir)}  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location = /2b { default_type text/plain; return 200 "ok"; }
    location = /todo { default_type application/json; return 200 '{"id":1,"title":"ok"}'; }
    location = /16k { default_type application/octet-stream; alias ${dir}/www/16k.bin; }
    ${echo ? `location = /sleep { default_type text/plain; echo_sleep 0.02; echo -n "ok"; }` : ""}
  }
}
`

const startNginx = async (): Promise<Origin> => {
  const dir = mkdtempSync(join(tmpdir(), "volley-bench-nginx-"))
  mkdirSync(join(dir, "www"))
  mkdirSync(join(dir, "tmp"))
  writeFileSync(join(dir, "www", "16k.bin"), Buffer.alloc(16 * 1024, 120))
  // nginx's worker runs as `nobody` when started by root: it must be able to read the file.
  for (const path of [dir, join(dir, "www"), join(dir, "www", "16k.bin")]) chmodSync(path, 0o755)
  const port = await freePort()
  writeFileSync(join(dir, "nginx.conf"), nginxConfig(dir, port, existsSync(ECHO_MODULE)))
  const child = spawn(NGINX, ["-e", join(dir, "error.log"), "-p", dir, "-c", join(dir, "nginx.conf")], {
    stdio: ["ignore", "ignore", "inherit"]
  })
  await waitForPort(port, child)
  const version = await new Promise<string>((resolve) => {
    const v = spawn(NGINX, ["-v"], { stdio: ["ignore", "ignore", "pipe"] })
    let out = ""
    v.stderr.on("data", (d) => {
      out += d
    })
    v.on("close", () => resolve(out.trim().replace("nginx version: ", "")))
  })
  const pid = child.pid ?? 0
  return {
    kind: "nginx",
    version: existsSync(ECHO_MODULE) ? `${version} + echo module` : version,
    base: `http://127.0.0.1:${port}`,
    pid,
    stop: async () => {
      await terminate(child)
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

const startNode = async (): Promise<Origin> => {
  const port = await freePort()
  const child = spawn(process.execPath, [join(import.meta.dirname, "origin.ts"), String(port)], {
    stdio: ["ignore", "ignore", "inherit"]
  })
  await waitForPort(port, child)
  const pid = child.pid ?? 0
  return {
    kind: "node:http",
    version: `node ${process.version}`,
    base: `http://127.0.0.1:${port}`,
    pid,
    stop: () => terminate(child)
  }
}

/** nginx when installed (set VOLLEY_BENCH_ORIGIN=node to force the fallback). */
export const startOrigin = (kind?: "node"): Promise<Origin> =>
  kind === undefined && existsSync(NGINX) && process.env.VOLLEY_BENCH_ORIGIN !== "node" ? startNginx() : startNode()

/** The latency-bound case needs `/sleep`: nginx serves it only with the echo module. */
export const hasSleep = (origin: Origin) => origin.kind === "node:http" || existsSync(ECHO_MODULE)
