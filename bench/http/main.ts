// `pnpm bench http`: HTTP fan-out throughput, latency-bound throughput and memory (issue 4,
// items 6 and 7). Every measurement runs in a fresh process against a local origin in its own
// process (nginx with one worker, else node:http), interleaved round by round so that drift on
// a noisy machine hits every client alike. Ratios compare medians of the same run.
//
// Knobs (environment): VOLLEY_BENCH_CLIENTS=volley,undici (subset), VOLLEY_BENCH_RUNS (3),
// VOLLEY_BENCH_REQUESTS (20000), VOLLEY_BENCH_ORIGIN=node (force the node:http origin).
import { spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { svg } from "./chart.ts"
import { clients } from "./clients.ts"
import { hasSleep, type Origin, startOrigin } from "./server.ts"

const PYTHON = "/usr/bin/python3"
const CONCURRENCY = 64
const REQUESTS = Number(process.env.VOLLEY_BENCH_REQUESTS ?? 20_000)
const RUNS = Number(process.env.VOLLEY_BENCH_RUNS ?? 3)
const LATENCY_REQUESTS = 2_000
const LATENCY_MS = 20
const MEMORY_REQUESTS = 100_000
const BODIES = [
  { name: "2 B", path: "/2b" },
  { name: "16 KiB", path: "/16k" }
] as const

const pythonClients: Record<string, { readonly label: string; readonly module: string }> = {
  "py-requests": { label: "python requests in run_in_executor", module: "requests" },
  "py-aiohttp": { label: "python aiohttp", module: "aiohttp" },
  "py-httpx": { label: "python httpx (async)", module: "httpx" }
}
const scripts: Record<string, string> = {
  "py-requests": "requests_executor.py",
  "py-aiohttp": "aiohttp_client.py",
  "py-httpx": "httpx_client.py"
}

const only = process.env.VOLLEY_BENCH_CLIENTS?.split(",")
const wanted = (name: string) => only === undefined || name === "undici" || only.includes(name)
const pythonHas = (module: string) => spawnSync(PYTHON, ["-c", `import ${module}`], { stdio: "ignore" }).status === 0
const nodeNames = Object.keys(clients).filter(wanted)
const pythonNames = Object.keys(pythonClients).filter((n) => wanted(n) && pythonHas(pythonClients[n]!.module))
const missingPython = Object.keys(pythonClients).filter((n) => wanted(n) && !pythonNames.includes(n))
const labelOf = (name: string) => clients[name]?.label ?? pythonClients[name]?.label ?? name

interface Sample {
  readonly ok: number
  readonly failed: number
  readonly ms: number
  readonly cpuUs: number
}

// One measurement in a fresh process, killed after 120 s at the latest.
const measure = (name: string, url: string, total: number, warmup: number): Sample => {
  const python = scripts[name]
  const run = python
    ? spawnSync(
        PYTHON,
        [join(import.meta.dirname, "python", python), url, String(total), String(CONCURRENCY), String(warmup)],
        {
          encoding: "utf8",
          timeout: 120_000
        }
      )
    : spawnSync(
        process.execPath,
        [
          "--conditions=source",
          "--expose-gc",
          join(import.meta.dirname, "measure.ts"),
          name,
          url,
          String(total),
          String(CONCURRENCY),
          String(warmup)
        ],
        { encoding: "utf8", timeout: 120_000 }
      )
  const line = run.stdout.trim().split("\n").at(-1) ?? ""
  if (run.status !== 0 || !line.startsWith("{")) {
    console.error(`  ${name} ${url}: failed (status ${run.status})\n${run.stderr.slice(-2000)}`)
    return { ok: 0, failed: total, ms: Number.NaN, cpuUs: Number.NaN }
  }
  return JSON.parse(line) as Sample
}

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const rps = (s: Sample) => (s.failed === 0 && s.ok > 0 ? (s.ok / s.ms) * 1000 : 0)

const names = [...nodeNames, ...pythonNames]
const origin: Origin = await startOrigin()
const origins: Array<Origin> = [origin]
// Last resort if the run dies or is stopped: signal every origin we started, by PID.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130))
process.on("exit", () => {
  for (const o of origins) {
    try {
      process.kill(o.pid, "SIGTERM")
    } catch {}
  }
})
console.log(`origin: ${origin.kind} ${origin.version} at ${origin.base} (pid ${origin.pid})`)
const sleepOrigin = hasSleep(origin) ? origin : await startOrigin("node")
if (sleepOrigin !== origin) origins.push(sleepOrigin)

// Throughput: RUNS rounds x body sizes x clients.
const throughput = new Map<string, Array<number>>()
const cpuPerRequest = new Map<string, Array<number>>()
for (let round = 1; round <= RUNS; round++) {
  for (const body of BODIES) {
    for (const name of names) {
      const sample = measure(name, origin.base + body.path, REQUESTS, 2_000)
      const key = `${name}|${body.name}`
      throughput.set(key, [...(throughput.get(key) ?? []), rps(sample)])
      cpuPerRequest.set(key, [...(cpuPerRequest.get(key) ?? []), sample.cpuUs])
      console.log(
        `  round ${round} ${body.name.padEnd(6)} ${name.padEnd(16)} ${Math.round(rps(sample))} req/s, ${sample.cpuUs.toFixed(1)} µs CPU/req`
      )
    }
  }
}

// Latency-bound: each request waits 20 ms at the origin; ideal = CONCURRENCY / 20 ms.
const ideal = CONCURRENCY / (LATENCY_MS / 1000)
const latency = new Map<string, Array<number>>()
for (let round = 1; round <= RUNS; round++) {
  for (const name of names) {
    const sample = measure(name, `${sleepOrigin.base}/sleep`, LATENCY_REQUESTS, 256)
    latency.set(name, [...(latency.get(name) ?? []), rps(sample)])
    console.log(`  round ${round} 20 ms   ${name.padEnd(16)} ${Math.round(rps(sample))} req/s`)
  }
}

// Memory: one streamed batch of 100,000 requests through volley.
const memoryRun = spawnSync(
  process.execPath,
  [
    "--conditions=source",
    "--expose-gc",
    join(import.meta.dirname, "memory.ts"),
    `${origin.base}/2b`,
    String(MEMORY_REQUESTS),
    String(CONCURRENCY)
  ],
  { encoding: "utf8", timeout: 300_000 }
)
const memory = memoryRun.status === 0 ? JSON.parse(memoryRun.stdout.trim().split("\n").at(-1) ?? "{}") : undefined
if (memory === undefined) console.error(`memory run failed:\n${memoryRun.stderr.slice(-2000)}`)
else console.log(`  memory: ${memory.done} requests, RSS ${memory.beforeMiB} -> peak ${memory.peakMiB} MiB`)

for (const o of origins.splice(0)) await o.stop()

// Report.
const rows = names.map((name) => {
  const bodies = BODIES.map((body) => {
    const runs = throughput.get(`${name}|${body.name}`) ?? []
    const base = median(throughput.get(`undici|${body.name}`) ?? [])
    const cpuUs = Math.round(median(cpuPerRequest.get(`${name}|${body.name}`) ?? []) * 10) / 10
    return {
      body: body.name,
      runs: runs.map(Math.round),
      median: Math.round(median(runs)),
      ratio: median(runs) / base,
      cpuUs
    }
  })
  const lat = latency.get(name) ?? []
  return {
    client: name,
    label: labelOf(name),
    bodies,
    latency: { runs: lat.map(Math.round), median: Math.round(median(lat)), fractionOfIdeal: median(lat) / ideal }
  }
})
const cpu = cpus()
const results = {
  date: new Date().toISOString(),
  machine: { cpus: cpu.length, model: cpu[0]?.model ?? "unknown", node: process.version },
  origin: { kind: origin.kind, version: origin.version, latencyOrigin: sleepOrigin.kind },
  concurrency: CONCURRENCY,
  requests: REQUESTS,
  runs: RUNS,
  latency: { requests: LATENCY_REQUESTS, delayMs: LATENCY_MS, idealRps: ideal },
  rows,
  memory: memory === undefined ? null : { requests: MEMORY_REQUESTS, concurrency: CONCURRENCY, ...memory },
  pythonMissing: missingPython
}
const resultsDir = join(import.meta.dirname, "..", "results")
writeFileSync(join(resultsDir, "http.json"), `${JSON.stringify(results, null, 2)}\n`)
writeFileSync(
  join(resultsDir, "http.svg"),
  svg(
    `req/s relative to raw undici Pool.request (${REQUESTS} GETs, concurrency ${CONCURRENCY}, median of ${RUNS})`,
    rows.map((r) => ({ client: r.label, values: r.bodies.map((b) => ({ series: `${b.body} body`, ratio: b.ratio })) }))
  )
)
const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "n/a")
const md = [
  "# HTTP fan-out benchmark",
  "",
  `Generated by \`pnpm bench http\` on ${results.date} (${cpu.length} × ${results.machine.model}, Node ${process.version}).`,
  `Origin: ${origin.kind} ${origin.version}, one worker, keep-alive, on 127.0.0.1${origin.kind === "node:http" ? " — **nginx was not installed, so a tuned node:http server in a child process stood in**" : ""}.`,
  "",
  `${REQUESTS.toLocaleString("en")} keep-alive GETs at concurrency ${CONCURRENCY}, each body read in full; every number is the median of ${RUNS} runs,`,
  "each run in a fresh process after a 2,000-request warm-up, rounds interleaved across clients. The ratio compares with",
  "raw undici `Pool.request` measured in the same run (the practical limit on this machine).",
  "",
  "![req/s relative to raw undici](http.svg)",
  "",
  `| client | ${BODIES.map((b) => `${b.name} req/s | ${b.name} ratio | ${b.name} CPU µs/req`).join(" | ")} |`,
  `| --- | ${BODIES.map(() => "---: | ---: | ---:").join(" | ")} |`,
  ...rows.map(
    (r) => `| ${r.label} | ${r.bodies.map((b) => `${b.median} | ${fmt(b.ratio)}x | ${b.cpuUs}`).join(" | ")} |`
  ),
  "",
  "CPU µs/req is the client process's own CPU time (user + system) per request, median of the runs: unlike req/s it",
  "hardly moves when other processes compete for the two cores.",
  "",
  `## Latency-bound: origin answers after ${LATENCY_MS} ms`,
  "",
  `${LATENCY_REQUESTS.toLocaleString("en")} GETs at concurrency ${CONCURRENCY} against ${sleepOrigin.kind === "nginx" ? "nginx `echo_sleep 0.02`" : "the node:http origin (`setTimeout` 20 ms)"}; the ideal is C / 20 ms = ${ideal} req/s.`,
  "",
  "| client | req/s (median) | fraction of ideal |",
  "| --- | ---: | ---: |",
  ...rows.map((r) => `| ${r.label} | ${r.latency.median} | ${fmt(r.latency.fractionOfIdeal)} |`),
  "",
  "## Memory: a streamed batch of 100,000 requests",
  "",
  memory === undefined
    ? "The memory run failed; see the console output."
    : [
        `${memory.done.toLocaleString("en")} GETs (2 B bodies) streamed through volley at concurrency ${CONCURRENCY} in ${(memory.ms / 1000).toFixed(1)} s,`,
        `RSS sampled every 50 ms: ${memory.beforeMiB} MiB before (after a 5,000-request warm-up), peak ${memory.peakMiB} MiB, ${memory.endMiB} MiB at the end:`,
        `**growth ${memory.growthMiB} MiB** over the whole batch (${results.memory?.samples?.length ?? 0} samples in http.json).`,
        `RSS after 25k / 50k / 75k / 100k requests: ${memory.rssByQuarterMiB.join(" / ")} MiB. JS heap: ${memory.heapBeforeMiB} MiB before,`,
        `peak ${memory.heapPeakMiB} MiB, ${memory.heapAfterGcMiB} MiB after a full GC at the end, so nothing per request is retained;`,
        "the growth is V8 letting the heap (and the allocator its pages) expand between major collections."
      ].join("\n"),
  "",
  "## How to reproduce",
  "",
  "```sh",
  "apt-get install -y --no-install-recommends nginx libnginx-mod-http-echo   # origin (else node:http fallback)",
  "apt-get install -y --no-install-recommends python3-requests python3-aiohttp python3-httpx   # python clients (optional)",
  "pnpm bench http",
  "```",
  "",
  "Clients: undici 8.13.1 `Pool` (64 connections); Effect `HttpClient` from `@effect/platform-node` `layerUndici`",
  "(undici `Agent`), with default tracing and with `HttpClient.TracerDisabledWhen` set to always; Node's global `fetch` with",
  "`p-limit`; got and axios with a keep-alive `http.Agent` (64 sockets); python clients from Debian's packages",
  "(`requests` in `loop.run_in_executor` with 64 threads, each with its own `Session` so connections are kept alive;",
  "`aiohttp` with a 64-connection `TCPConnector`; `httpx.AsyncClient` limited to 64 connections).",
  missingPython.length > 0 ? `\nNot measured (python module missing): ${missingPython.join(", ")}.` : "",
  ""
].join("\n")
writeFileSync(join(resultsDir, "http.md"), md)
console.log(`wrote ${join(resultsDir, "http.md")}`)
