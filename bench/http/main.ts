// `pnpm bench http`: HTTP fan-out throughput, latency-bound throughput and memory (issue 4,
// items 6 and 7). Every measurement runs in a fresh process against a local origin in its own
// process (nginx with one worker, else node:http), interleaved round by round so that drift on
// a noisy machine hits every client alike. Ratios compare medians of the same run: throughput
// with the floor (undici `Pool.dispatch` with a bare handler object), latency-bound with raw
// undici `Pool.request`; both always run.
//
// Knobs (environment): VOLLEY_BENCH_CLIENTS=volley,idiom (subset), VOLLEY_BENCH_RUNS (3),
// VOLLEY_BENCH_REQUESTS (20000), VOLLEY_BENCH_ORIGIN=node (force the node:http origin).
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { cpus, loadavg } from "node:os"
import { join } from "node:path"
import { Pool } from "undici"
import { clients } from "./clients.ts"
import { type Results, writeReport } from "./report.ts"
import { hasSleep, type Origin, startOrigin } from "./server.ts"

const PYTHON = "/usr/bin/python3"
const CONCURRENCY = 64
const REQUESTS = Number(process.env.VOLLEY_BENCH_REQUESTS ?? 20_000)
const RUNS = Number(process.env.VOLLEY_BENCH_RUNS ?? 3)
// 4,000 (about 1.5 s at the ceiling): with 2,000 a run lasted under a second, and a neighbour's burst
// of work moved one client's ratio by several percent.
const LATENCY_REQUESTS = 4_000
const LATENCY_MS = 20
const MEMORY_REQUESTS = 100_000
// Rounds of REQUESTS per client in the warm-process measurement (after each client's warm-up).
const WARM_ROUNDS = 5
// The README's first example (`Effect.forEach` over `Http.getJson` with a schema) against one
// small JSON object, with the floor and the text idiom on the same path in the same rounds.
const README_PATH = "/todo"
const README_BODY = '{"id":1,"title":"ok"}'
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
const wanted = (name: string) => only === undefined || name === "floor" || name === "undici" || only.includes(name)
const pythonHas = (module: string) => spawnSync(PYTHON, ["-c", `import ${module}`], { stdio: "ignore" }).status === 0
// The README's example reads JSON: those clients run only against `/todo` (see README_PATH).
const JSON_ONLY = ["idiom-json", "volley-json"]
const nodeNames = Object.keys(clients).filter((name) => wanted(name) && !JSON_ONLY.includes(name))
const pythonNames = Object.keys(pythonClients).filter((n) => wanted(n) && pythonHas(pythonClients[n]!.module))
const missingPython = Object.keys(pythonClients).filter((n) => wanted(n) && !pythonNames.includes(n))
const labelOf = (name: string) => clients[name]?.label ?? pythonClients[name]?.label ?? name

interface Sample {
  readonly ok: number
  readonly failed: number
  readonly ms: number
  readonly cpuUs: number
  /** Full GCs during the timed run (see measure.ts); python clients report none. */
  readonly majorGcs?: number
}

// The child running now, so that an interrupted run can stop it too.
let current: ChildProcess | undefined

// Runs a child to completion (killed after `timeoutMs`), asynchronously so signals still land.
const run = (command: string, args: ReadonlyArray<string>, timeoutMs: number, env: Record<string, string> = {}) =>
  new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      timeout: timeoutMs,
      env: { ...process.env, ...env }
    })
    current = child
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => {
      stdout += d
    })
    child.stderr.on("data", (d) => {
      stderr += d
    })
    child.on("close", (status) => {
      current = undefined
      resolve({ status, stdout, stderr })
    })
  })

// One measurement in a fresh process, killed after 120 s at the latest.
const measure = async (name: string, url: string, total: number, warmup: number): Promise<Sample> => {
  const python = scripts[name]
  const args = [url, String(total), String(CONCURRENCY), String(warmup)]
  const result = python
    ? await run(PYTHON, [join(import.meta.dirname, "python", python), ...args], 120_000)
    : await run(
        process.execPath,
        ["--conditions=@volley/source", "--expose-gc", join(import.meta.dirname, "measure.ts"), name, ...args],
        120_000
      )
  const line = result.stdout.trim().split("\n").at(-1) ?? ""
  if (result.status !== 0 || !line.startsWith("{")) {
    console.error(`  ${name} ${url}: failed (status ${result.status})\n${result.stderr.slice(-2000)}`)
    return { ok: 0, failed: total, ms: Number.NaN, cpuUs: Number.NaN, majorGcs: Number.NaN }
  }
  return JSON.parse(line) as Sample
}

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
// Median time of `count` requests sent one after another over one kept-alive connection.
async function loneLatency(url: string, count: number): Promise<number> {
  const { origin, pathname } = new URL(url)
  const pool = new Pool(origin, { connections: 1 })
  const times: Array<number> = []
  try {
    for (let i = 0; i < count; i++) {
      const started = performance.now()
      const response = await pool.request({ path: pathname, method: "GET", headersTimeout: 5_000 })
      await response.body.arrayBuffer()
      times.push(performance.now() - started)
    }
  } finally {
    await pool.close()
  }
  return median(times)
}
const rps = (s: Sample) => (s.failed === 0 && s.ok > 0 ? (s.ok / s.ms) * 1000 : 0)

const names = [...nodeNames, ...pythonNames]
const origin: Origin = await startOrigin()
const origins: Array<Origin> = [origin]
// Last resort if the run dies or is stopped: signal every origin we started, by PID.
for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => process.exit(130))
process.on("exit", () => {
  if (current?.pid !== undefined) current.kill("SIGTERM")
  for (const o of origins) {
    try {
      process.kill(o.pid, "SIGTERM")
    } catch {}
  }
})
console.log(`origin: ${origin.kind} ${origin.version} at ${origin.base} (pid ${origin.pid})`)
const sleepOrigin = hasSleep(origin) ? origin : await startOrigin("node")
if (sleepOrigin !== origin) origins.push(sleepOrigin)

// What else ran on the machine meanwhile (1-minute load average before each throughput
// measurement): req/s moves with it, CPU per request less.
const loads: Array<number> = []
// Throughput: RUNS rounds x body sizes x clients.
const throughput = new Map<string, Array<number>>()
const cpuPerRequest = new Map<string, Array<number>>()
const majorGcs = new Map<string, Array<number>>()
for (let round = 1; round <= RUNS; round++) {
  for (const body of BODIES) {
    for (const name of names) {
      loads.push(loadavg()[0]!)
      const sample = await measure(name, origin.base + body.path, REQUESTS, 2_000)
      const key = `${name}|${body.name}`
      throughput.set(key, [...(throughput.get(key) ?? []), rps(sample)])
      cpuPerRequest.set(key, [...(cpuPerRequest.get(key) ?? []), sample.cpuUs])
      if (sample.majorGcs !== undefined) majorGcs.set(key, [...(majorGcs.get(key) ?? []), sample.majorGcs])
      console.log(
        `  round ${round} ${body.name.padEnd(6)} ${name.padEnd(16)} ${Math.round(rps(sample))} req/s, ${sample.cpuUs.toFixed(1)} µs CPU/req, ${sample.majorGcs ?? "?"} full GCs`
      )
    }
  }
}

const jsonNames = ["floor", "idiom", ...JSON_ONLY].filter(wanted)
const readmeRuns = new Map<string, Array<Sample>>()
for (let round = 1; round <= RUNS; round++) {
  for (const name of jsonNames) {
    const sample = await measure(name, origin.base + README_PATH, REQUESTS, 2_000)
    readmeRuns.set(name, [...(readmeRuns.get(name) ?? []), sample])
    console.log(
      `  round ${round} JSON   ${name.padEnd(16)} ${Math.round(rps(sample))} req/s, ${sample.cpuUs.toFixed(1)} µs CPU/req`
    )
  }
}

// Latency-bound: each request waits 20 ms at the origin; ideal = CONCURRENCY / 20 ms.
const ideal = CONCURRENCY / (LATENCY_MS / 1000)
// The origin's timer is not exact: one request on its own takes a little more than 20 ms, so
// CONCURRENCY / that is the ceiling for every client, reported beside the nominal ideal.
const loneMs = await loneLatency(`${sleepOrigin.base}/sleep`, 100)
console.log(`  one request alone: ${loneMs.toFixed(2)} ms (median of 100, one after another)`)
const latency = new Map<string, Array<number>>()
for (let round = 1; round <= RUNS; round++) {
  for (const name of names) {
    const sample = await measure(name, `${sleepOrigin.base}/sleep`, LATENCY_REQUESTS, 256)
    latency.set(name, [...(latency.get(name) ?? []), rps(sample)])
    console.log(`  round ${round} 20 ms   ${name.padEnd(16)} ${Math.round(rps(sample))} req/s`)
  }
}

// Memory: one streamed batch of 100,000 requests through volley.
const memoryRun = await run(
  process.execPath,
  [
    "--conditions=@volley/source",
    "--expose-gc",
    join(import.meta.dirname, "memory.ts"),
    `${origin.base}/2b`,
    String(MEMORY_REQUESTS),
    String(CONCURRENCY)
  ],
  300_000
)
const memory = memoryRun.status === 0 ? JSON.parse(memoryRun.stdout.trim().split("\n").at(-1) ?? "{}") : undefined
if (memory === undefined) console.error(`memory run failed:\n${memoryRun.stderr.slice(-2000)}`)
else console.log(`  memory: ${memory.done} requests, RSS ${memory.beforeMiB} -> peak ${memory.peakMiB} MiB`)

// The clients' own JavaScript per request, with no network (see overhead.ts).
const overheadRun = await run(
  process.execPath,
  ["--conditions=@volley/source", "--expose-gc", join(import.meta.dirname, "overhead.ts"), "50000", "7"],
  300_000,
  { OVERHEAD_JSON: "1" }
)
const overhead = overheadRun.status === 0 ? JSON.parse(overheadRun.stdout.trim().split("\n").at(-1) ?? "{}") : undefined
if (overhead === undefined) console.error(`overhead run failed:\n${overheadRun.stderr.slice(-2000)}`)
else
  console.log(
    `  no network: ${overhead.forms.map((f: { name: string; medianUs: number }) => `${f.name} ${f.medianUs} µs`).join(", ")}`
  )

// A warm process: CPU per request of the floors and volley's forms, interleaved round by round in
// one process after the JIT has settled (see cpu.ts): the steady state of a long-running service,
// where the fresh processes above also pay for the JIT's first compilations.
const WARM_CLIENTS = [
  "floor",
  "effect-floor",
  "idiom",
  "idiom-untraced",
  "volley",
  "volley-read",
  "volley-stream"
].filter(wanted)
const warm: Array<unknown> = []
for (const body of BODIES) {
  const warmRun = await run(
    process.execPath,
    [
      "--conditions=@volley/source",
      "--expose-gc",
      join(import.meta.dirname, "cpu.ts"),
      WARM_CLIENTS.join(","),
      body.path,
      String(REQUESTS),
      String(WARM_ROUNDS)
    ],
    300_000,
    { CPU_JSON: "1" }
  )
  const line = warmRun.stdout.trim().split("\n").at(-1) ?? ""
  if (warmRun.status !== 0 || !line.startsWith("{")) console.error(`warm run failed:\n${warmRun.stderr.slice(-2000)}`)
  else {
    warm.push({ body: body.name, ...JSON.parse(line) })
    console.log(`  warm ${body.name}: ${line}`)
  }
}

for (const o of origins.splice(0)) await o.stop()

// Report.
const rows = names.map((name) => {
  const bodies = BODIES.map((body) => {
    const runs = throughput.get(`${name}|${body.name}`) ?? []
    const floorRuns = throughput.get(`floor|${body.name}`) ?? []
    const cpuUs = Math.round(median(cpuPerRequest.get(`${name}|${body.name}`) ?? []) * 10) / 10
    const floorCpu = median(cpuPerRequest.get(`floor|${body.name}`) ?? [])
    return {
      body: body.name,
      runs: runs.map(Math.round),
      median: Math.round(median(runs)),
      // Paired: each round's req/s over the floor's in the same round (minutes apart at most),
      // then the median of those, so load that comes and goes between rounds cancels out.
      ratio: median(runs.map((rps, i) => rps / (floorRuns[i] ?? Number.NaN))),
      cpuUs,
      cpuRuns: (cpuPerRequest.get(`${name}|${body.name}`) ?? []).map((us) => Math.round(us * 10) / 10),
      majorGcs: majorGcs.get(`${name}|${body.name}`) ?? [],
      cpuRatio: floorCpu / median(cpuPerRequest.get(`${name}|${body.name}`) ?? [])
    }
  })
  const lat = latency.get(name) ?? []
  const latBase = latency.get("undici") ?? []
  return {
    client: name,
    label: labelOf(name),
    bodies,
    latency: {
      runs: lat.map(Math.round),
      median: Math.round(median(lat)),
      fractionOfIdeal: median(lat) / ideal,
      ratioToPoolRequest: median(lat.map((rps, i) => rps / (latBase[i] ?? Number.NaN)))
    }
  }
})
const floorJson = readmeRuns.get("floor") ?? []
const readme = {
  path: README_PATH,
  body: README_BODY,
  rows: jsonNames.map((name) => {
    const samples = readmeRuns.get(name) ?? []
    return {
      client: name,
      label: labelOf(name),
      median: Math.round(median(samples.map(rps))),
      ratio: median(samples.map((s, i) => rps(s) / (floorJson[i] === undefined ? Number.NaN : rps(floorJson[i]!)))),
      cpuUs: Math.round(median(samples.map((s) => s.cpuUs)) * 10) / 10
    }
  })
}
const cpu = cpus()
const results = {
  date: new Date().toISOString(),
  machine: { cpus: cpu.length, model: cpu[0]?.model ?? "unknown", node: process.version },
  origin: { kind: origin.kind, version: origin.version, latencyOrigin: sleepOrigin.kind },
  concurrency: CONCURRENCY,
  requests: REQUESTS,
  runs: RUNS,
  baseline: "floor",
  load: {
    min: Math.round(Math.min(...loads) * 100) / 100,
    median: Math.round(median(loads) * 100) / 100,
    max: Math.round(Math.max(...loads) * 100) / 100
  },
  latency: {
    requests: LATENCY_REQUESTS,
    delayMs: LATENCY_MS,
    idealRps: ideal,
    loneMs: Math.round(loneMs * 100) / 100,
    ceilingRps: Math.round(CONCURRENCY / (loneMs / 1000))
  },
  rows,
  readme,
  memory: memory === undefined ? null : { requests: MEMORY_REQUESTS, concurrency: CONCURRENCY, ...memory },
  overhead: overhead ?? null,
  warm: warm.length === BODIES.length ? (warm as NonNullable<Results["warm"]>) : null,
  pythonMissing: missingPython
}
writeReport(results)
console.log("wrote bench/results/http.md, http.json, http.svg")
