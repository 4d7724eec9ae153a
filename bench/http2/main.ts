// `pnpm bench http2`: one TLS origin (nginx, `listen ... ssl http2`, a throw-away CA) at
// concurrency 64, volley's batch API (Fanout.allSettled) over HTTP/1.1 (up to 64 connections)
// vs HTTP/2 (`NodeHttpClient.layer({ http2: true })`: one connection, streams multiplexed).
// Each measurement runs in a fresh process, the two protocols interleaved round by round, and
// the result is the median of each round's HTTP/2 req/s over HTTP/1.1's in the same round.
//
// Knobs (environment): VOLLEY_BENCH_RUNS (5), VOLLEY_BENCH_REQUESTS (20000).
//
// Child mode: `node main.ts measure <h1|h2> <url> <ca file> <total>` prints one JSON line.
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { Fanout } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Result from "effect/Result"
import { freePort, nginxPreamble, waitForPort } from "../http/server.ts"

const CONCURRENCY = 64
const REQUESTS = Number(process.env.VOLLEY_BENCH_REQUESTS ?? 20_000)
const RUNS = Number(process.env.VOLLEY_BENCH_RUNS ?? 5)
const BODIES = [
  { name: "2 B", path: "/2b" },
  { name: "16 KiB", path: "/16k" }
] as const
const PROTOCOLS = ["h1", "h2"] as const
type Protocol = (typeof PROTOCOLS)[number]

const byteLength = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.arrayBuffer, (bytes) => bytes.byteLength)

// One measurement: warm up, then `total` GETs through Fanout.allSettled at CONCURRENCY.
const measure = async (protocol: Protocol, url: string, caFile: string, total: number) => {
  const layer = NodeHttpClient.layer({ http2: protocol === "h2", tls: { ca: readFileSync(caFile, "utf8") } })
  const runtime = ManagedRuntime.make(layer)
  const run = async (n: number) => {
    const batch = Fanout.allSettled(
      Array.from({ length: n }, () => url),
      { concurrency: CONCURRENCY, read: byteLength }
    )
    const results = await runtime.runPromise(Effect.timeout(batch, Duration.seconds(60)))
    return results.filter(Result.isSuccess).length
  }
  await run(2_000)
  globalThis.gc?.()
  const start = performance.now()
  const cpu = process.cpuUsage()
  const ok = await run(total)
  const ms = performance.now() - start
  const used = process.cpuUsage(cpu)
  await runtime.dispose()
  process.stdout.write(`${JSON.stringify({ ok, failed: total - ok, ms, cpuUs: (used.user + used.system) / ok })}\n`)
}

if (process.argv[2] === "measure") {
  const [protocol, url = "", caFile = "", total = "0"] = process.argv.slice(3)
  await measure(protocol as Protocol, url, caFile, Number(total))
  process.exit(0)
}

// The origin: nginx with one worker, TLS with ALPN offering h2 and http/1.1 on one port.
const dir = mkdtempSync(join(tmpdir(), "volley-bench-h2-"))
chmodSync(dir, 0o755)
mkdirSync(join(dir, "www"))
mkdirSync(join(dir, "tmp"))
writeFileSync(join(dir, "www", "16k.bin"), Buffer.alloc(16 * 1024, 120))
chmodSync(join(dir, "www"), 0o755)
chmodSync(join(dir, "www", "16k.bin"), 0o644)
const openssl = (...args: Array<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })
const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
openssl("req", "-x509", ...EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA")
writeFileSync(join(dir, "leaf.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
openssl("req", ...EC, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
openssl(
  "x509",
  "-req",
  "-in",
  "server.csr",
  "-CA",
  "ca.crt",
  "-CAkey",
  "ca.key",
  "-CAcreateserial",
  "-out",
  "server.crt",
  "-days",
  "2",
  "-extfile",
  "leaf.ext"
)
const port = await freePort()
writeFileSync(
  join(dir, "nginx.conf"),
  `${nginxPreamble(dir)}  http2_max_requests 10000000;
  http2_max_concurrent_streams 128;
  ssl_certificate ${dir}/server.crt;
  ssl_certificate_key ${dir}/server.key;
  server {
    listen 127.0.0.1:${port} ssl http2 backlog=4096;
    location = /2b { default_type text/plain; return 200 "ok"; }
    location = /16k { default_type application/octet-stream; alias ${dir}/www/16k.bin; }
  }
}
`
)
const nginx = spawn("/usr/sbin/nginx", ["-e", join(dir, "error.log"), "-p", dir, "-c", join(dir, "nginx.conf")], {
  stdio: ["ignore", "ignore", "inherit"]
})
let current: ChildProcess | undefined
process.on("exit", () => {
  current?.kill("SIGTERM")
  nginx.kill("SIGTERM")
  rmSync(dir, { recursive: true, force: true })
})
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130))
await waitForPort(port, nginx)
const base = `https://localhost:${port}`
console.log(`origin: nginx (TLS, http2) at ${base} (pid ${nginx.pid})`)

interface Sample {
  readonly ok: number
  readonly failed: number
  readonly ms: number
  readonly cpuUs: number
}

// One measurement in a fresh process, killed after 120 s at the latest.
const child = (protocol: Protocol, url: string) =>
  new Promise<Sample>((resolve) => {
    const args = ["--conditions=@volley/source", "--expose-gc", import.meta.filename, "measure", protocol, url]
    const proc = spawn(process.execPath, [...args, join(dir, "ca.crt"), String(REQUESTS)], {
      stdio: ["ignore", "pipe", "inherit"],
      timeout: 120_000
    })
    current = proc
    let out = ""
    proc.stdout.on("data", (d) => {
      out += d
    })
    proc.on("close", (status) => {
      current = undefined
      const line = out.trim().split("\n").at(-1) ?? ""
      resolve(
        status === 0 && line.startsWith("{")
          ? (JSON.parse(line) as Sample)
          : { ok: 0, failed: REQUESTS, ms: Number.NaN, cpuUs: Number.NaN }
      )
    })
  })

const rps = (s: Sample) => (s.failed === 0 && s.ok > 0 ? (s.ok / s.ms) * 1000 : 0)
const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const samples = new Map<string, Array<Sample>>()
const loads: Array<number> = []
for (let round = 1; round <= RUNS; round++) {
  for (const body of BODIES) {
    // Alternate which protocol goes first, so a drift within a round hits both alike.
    for (const protocol of round % 2 === 1 ? PROTOCOLS : [...PROTOCOLS].reverse()) {
      loads.push(loadavg()[0]!)
      const sample = await child(protocol, base + body.path)
      const key = `${protocol}|${body.name}`
      samples.set(key, [...(samples.get(key) ?? []), sample])
      console.log(
        `  round ${round} ${body.name.padEnd(6)} ${protocol} ${Math.round(rps(sample))} req/s, ${sample.cpuUs.toFixed(1)} µs CPU/req`
      )
    }
  }
}

const rows = BODIES.map((body) => {
  const h1 = samples.get(`h1|${body.name}`) ?? []
  const h2 = samples.get(`h2|${body.name}`) ?? []
  return {
    body: body.name,
    h1: { runs: h1.map((s) => Math.round(rps(s))), cpuUs: median(h1.map((s) => s.cpuUs)) },
    h2: { runs: h2.map((s) => Math.round(rps(s))), cpuUs: median(h2.map((s) => s.cpuUs)) },
    // Paired per round: HTTP/2's req/s over HTTP/1.1's in the same round.
    ratio: median(h2.map((s, i) => rps(s) / rps(h1[i]!))),
    cpuRatio: median(h1.map((s) => s.cpuUs)) / median(h2.map((s) => s.cpuUs))
  }
})
const results = {
  date: new Date().toISOString(),
  node: process.version,
  concurrency: CONCURRENCY,
  requests: REQUESTS,
  runs: RUNS,
  load: { min: Math.min(...loads), median: median(loads), max: Math.max(...loads) },
  rows
}
const out = join(import.meta.dirname, "..", "results")
mkdirSync(out, { recursive: true })
writeFileSync(join(out, "http2.json"), `${JSON.stringify(results, null, 2)}\n`)
const table = rows
  .map(
    (r) =>
      `| ${r.body} | ${Math.round(median(r.h1.runs))} | ${Math.round(median(r.h2.runs))} | ${r.ratio.toFixed(2)}x | ${r.h1.cpuUs.toFixed(1)} | ${r.h2.cpuUs.toFixed(1)} | ${r.cpuRatio.toFixed(2)}x |`
  )
  .join("\n")
writeFileSync(
  join(out, "http2.md"),
  `# HTTP/1.1 vs HTTP/2: one TLS origin at concurrency ${CONCURRENCY}

volley \`Fanout.allSettled\` of ${REQUESTS} GETs (bodies read in full) against nginx (one worker, TLS,
\`ssl http2\`), with \`NodeHttpClient.layer({ http2 })\` off (HTTP/1.1, up to ${CONCURRENCY} connections) and on
(HTTP/2, one connection). ${RUNS} rounds, each measurement in a fresh process, the protocols interleaved.
"h2 / h1" is the median over rounds of HTTP/2's req/s over HTTP/1.1's in the same round; "h1/h2 CPU" is
HTTP/1.1's CPU µs per request over HTTP/2's (above 1: HTTP/2 costs less CPU). Measured ${results.date}
on node ${process.version}; the machine was shared (1-minute load average ${results.load.min.toFixed(2)}–${results.load.max.toFixed(2)},
median ${results.load.median.toFixed(2)}, 2 cores).

| body | HTTP/1.1 req/s | HTTP/2 req/s | h2 / h1 | HTTP/1.1 CPU µs/req | HTTP/2 CPU µs/req | h1/h2 CPU |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
${table}
`
)
console.log(readFileSync(join(out, "http2.md"), "utf8"))
process.exit(0)
