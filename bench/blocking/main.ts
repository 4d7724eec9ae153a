// Blocking executor benchmark: volley's NodeBlocking pool against piscina, tinypool, workerpool and
// a minimal hand-written worker_threads pool (the messaging floor), same process, 2 threads each:
//   (a) start-up: from creating the pool (volley: building NodeBlocking.layer) to the first result
//   (b) 50,000 no-op tasks submitted at once: tasks per second; volley in each submit form users
//       write: Effect.forEach and Effect.all with unbounded concurrency, a 1,024 window, and the
//       batch API Blocking.runAll (one fiber for the batch)
//   (c) 400 CPU tasks of ~5 ms: wall time, and speed-up over running them inline
//   (d) main-thread event-loop delay p99 during (c)
//   (e) 100,000 no-op tasks submitted at once on volley (forEach unbounded, and Blocking.runAll
//       with its default window of 1,024) and on piscina: RSS
//       growth and event-loop delay p99 while they drain
//   (f) the Effect floor under volley: Blocking.run (forEach unbounded) on an executor that runs no
//       thread (floor.ts): no-op rows only
// and, for (b), the main thread's CPU time per task (process.threadCpuUsage): unlike tasks per
// second, it hardly moves when other processes take the machine's cores.
// Each measurement is the median of RUNS runs after a warm-up; every ratio divides two numbers of
// the same run. Results: bench/results/blocking.{md,json}. `pnpm bench blocking [pool ...]`.

import { writeFileSync } from "node:fs"
import os from "node:os"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as Blocking from "@volley/core/Blocking"
import * as NodeBlocking from "@volley/node/NodeBlocking"
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import { Piscina } from "piscina"
import Tinypool from "tinypool"
import workerpool from "workerpool"
import { measureCapacity } from "./capacity.ts"
import * as Floor from "./floor.ts"
import { MinimalPool } from "./minimal.ts"
import * as Tasks from "./tasks.ts"
import * as Work from "./work.ts"

const THREADS = 2
const NOOP_TASKS = 50_000
const FLOOD_TASKS = 100_000
const WINDOW = 1_024
const CPU_TASKS = 400
const CPU_MS = 5
const RUNS = Number(process.env.BENCH_RUNS ?? 3)

type Kind = "noop" | "spin"
type Form = "forEach unbounded" | "Effect.all unbounded" | "forEach 1024" | "Blocking.runAll"

/** Submits every input in the given form, as users write it. */
const submitAll = (
  form: Form,
  task: Blocking.Task<number, number, never>,
  inputs: ReadonlyArray<number>
): Effect.Effect<void, unknown, Blocking.BlockingExecutor> => {
  switch (form) {
    case "Effect.all unbounded":
      return Effect.all(
        inputs.map((n) => Blocking.run(task, n)),
        { concurrency: "unbounded", discard: true }
      )
    case "Blocking.runAll":
      return Effect.asVoid(Blocking.runAll(task, inputs))
    default:
      return Effect.forEach(inputs, (n) => Blocking.run(task, n), {
        concurrency: form === "forEach 1024" ? WINDOW : "unbounded",
        discard: true
      })
  }
}

interface Pool {
  readonly name: string
  readonly run: (kind: Kind, n: number) => Promise<number>
  /** Runs every input at once (volley: in the given submit form). */
  readonly runAll: (kind: Kind, inputs: ReadonlyArray<number>) => Promise<void>
  readonly close: () => Promise<unknown>
  /** Runs no thread: measured on no-op tasks only. */
  readonly noThreads?: true
}

const pooledFile = new URL("./pooled.ts", import.meta.url).href

/** Every input submitted at once, as a promise each: how every pool but volley is used. */
const allPromises = (run: Pool["run"]) => (kind: Kind, inputs: ReadonlyArray<number>) =>
  Promise.all(inputs.map((n) => run(kind, n))).then(() => undefined)

const volley = (form: Form) => (): Pool => {
  const runtime = ManagedRuntime.make(
    NodeBlocking.layer({ minWorkers: THREADS, maxWorkers: THREADS, tasks: [Tasks.noop, Tasks.spin] })
  )
  const task = (kind: Kind) => (kind === "noop" ? Tasks.noop : Tasks.spin)
  return {
    name: `volley, ${form}`,
    run: (kind, n) => runtime.runPromise(Blocking.run(task(kind), n)),
    runAll: (kind, inputs) => runtime.runPromise(submitAll(form, task(kind), inputs)),
    close: () => runtime.dispose()
  }
}

const pools: Record<string, () => Pool> = {
  minimal: () => {
    const pool = new MinimalPool(THREADS)
    const run = (kind: Kind, n: number) => pool.run(kind, n)
    return { name: "minimal worker_threads pool", run, runAll: allPromises(run), close: () => pool.close() }
  },
  piscina: () => {
    const pool = new Piscina({ filename: pooledFile, minThreads: THREADS, maxThreads: THREADS })
    const run = (kind: Kind, n: number): Promise<number> => pool.run(n, { name: kind })
    return { name: "piscina 5.3.2", run, runAll: allPromises(run), close: () => pool.destroy() }
  },
  tinypool: () => {
    const pool = new Tinypool({ filename: pooledFile, minThreads: THREADS, maxThreads: THREADS })
    const run = (kind: Kind, n: number): Promise<number> => pool.run(n, { name: kind })
    return { name: "tinypool 2.2.0", run, runAll: allPromises(run), close: () => pool.destroy() }
  },
  workerpool: () => {
    const pool = workerpool.pool(new URL("./workerpoolWorker.ts", import.meta.url).pathname, {
      minWorkers: THREADS,
      maxWorkers: THREADS,
      workerType: "thread"
    })
    const run = (kind: Kind, n: number) => Promise.resolve(pool.exec(kind, [n]) as PromiseLike<number>)
    return { name: "workerpool 10.0.3", run, runAll: allPromises(run), close: () => Promise.resolve(pool.terminate()) }
  },
  "volley-unbounded": volley("forEach unbounded"),
  "volley-all": volley("Effect.all unbounded"),
  "volley-1024": volley("forEach 1024"),
  "volley-runall": volley("Blocking.runAll"),
  "volley-floor": () => {
    const runtime = ManagedRuntime.make(Floor.layer)
    return {
      name: "Effect floor: Blocking.run, no thread",
      run: (_kind, n) => runtime.runPromise(Blocking.run(Tasks.noop, n)),
      runAll: (_kind, inputs) => runtime.runPromise(submitAll("forEach unbounded", Tasks.noop, inputs)),
      close: () => runtime.dispose(),
      noThreads: true
    }
  }
}

let sink = 0
const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/** Rounds of `spin` that take about `CPU_MS` inline on this machine. */
const calibrate = () => {
  // The fastest of many short runs: other load on the machine only ever makes a run slower.
  for (let i = 0; i < 20; i++) sink ^= Work.spin(20)
  let best = Number.POSITIVE_INFINITY
  for (let i = 0; i < 50; i++) {
    const start = performance.now()
    sink ^= Work.spin(20)
    best = Math.min(best, performance.now() - start)
  }
  return Math.max(1, Math.round((20 * CPU_MS) / best))
}

const rounds = calibrate()
const cpuInputs = Array.from({ length: CPU_TASKS }, () => rounds)
const noopInputs = Array.from({ length: NOOP_TASKS }, (_, i) => i)

// `sink` keeps V8 from dropping calls whose result is unused.
const inline = () => {
  const start = performance.now()
  for (const n of cpuInputs) sink ^= Work.spin(n)
  return performance.now() - start
}
const inlineRuns: Array<number> = []
const capacityBefore = await measureCapacity(rounds, CPU_TASKS)
console.log(`calibrated spin(${rounds}) ≈ ${CPU_MS} ms; bare threads: 2 give ${capacityBefore.toFixed(2)}x of 1`)

const selected = Object.keys(pools).filter((k) => process.argv.length < 3 || process.argv.slice(2).includes(k))

// (a) Start-up, round by round: a fresh pool each time, closed before the next one starts. The
// volley forms share one pool, so only the first of them is timed.
const startupRuns = new Map<string, Array<number>>()
const startupKeys = selected.filter(
  (k) => k !== "volley-floor" && (!k.startsWith("volley-") || k === selected.find((s) => s.startsWith("volley-")))
)
for (let r = 0; r < RUNS + 1; r++) {
  for (const key of startupKeys) {
    const start = performance.now()
    const pool = pools[key]!()
    await pool.run("noop", 1)
    const millis = performance.now() - start
    await pool.close()
    // The first round loads modules from disk and warms the JIT: not counted.
    if (r > 0) startupRuns.set(key, [...(startupRuns.get(key) ?? []), millis])
  }
}

interface Runs {
  noopPerSecond: Array<number>
  noopMainCpuUs: Array<number>
  cpuWallMs: Array<number>
  speedUp: Array<number>
  loopDelayP99Ms: Array<number>
}

// (b)-(d): pools run round by round (each pool once per round, in turn), so drift on a shared
// machine hits them alike. The speed-up divides one inline time, the median of the inline runs
// made before every pool run, by each pool's median wall time.
const active = selected.map((key) => ({ key, pool: pools[key]!() }))
for (const { pool } of active) {
  // Warm-up: threads started, modules loaded, JIT warm on both sides.
  for (let i = 0; i < 2; i++) await pool.runAll("noop", noopInputs)
  if (pool.noThreads === undefined) await pool.runAll("spin", cpuInputs.slice(0, 8))
}
const measured: Array<Runs> = active.map(() => ({
  noopPerSecond: [],
  noopMainCpuUs: [],
  cpuWallMs: [],
  speedUp: [],
  loopDelayP99Ms: []
}))
for (let r = 0; r < RUNS; r++) {
  for (const [i, { pool }] of active.entries()) {
    const runs = measured[i]!
    globalThis.gc?.()
    const cpuBefore = process.threadCpuUsage()
    let start = performance.now()
    await pool.runAll("noop", noopInputs)
    runs.noopPerSecond.push(NOOP_TASKS / ((performance.now() - start) / 1000))
    const cpu = process.threadCpuUsage(cpuBefore)
    runs.noopMainCpuUs.push((cpu.user + cpu.system) / NOOP_TASKS)
    if (pool.noThreads !== undefined) {
      console.log(
        `  round ${r + 1} ${pool.name.padEnd(32)} no-op ${Math.round(runs.noopPerSecond.at(-1)!).toLocaleString("en")}/s (main ${runs.noopMainCpuUs.at(-1)!.toFixed(1)} µs/task)`
      )
      continue
    }
    const inlineMs = inline()
    inlineRuns.push(inlineMs)
    globalThis.gc?.()
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    start = performance.now()
    await pool.runAll("spin", cpuInputs)
    const wall = performance.now() - start
    delay.disable()
    runs.cpuWallMs.push(wall)
    runs.speedUp.push(inlineMs / wall)
    runs.loopDelayP99Ms.push(delay.percentile(99) / 1e6)
    console.log(
      `  round ${r + 1} ${pool.name.padEnd(32)} no-op ${Math.round(runs.noopPerSecond.at(-1)!).toLocaleString("en")}/s (main ${runs.noopMainCpuUs.at(-1)!.toFixed(1)} µs/task)  cpu ${wall.toFixed(0)} ms (inline ${inlineMs.toFixed(0)} ms)  loop p99 ${runs.loopDelayP99Ms.at(-1)!.toFixed(2)} ms`
    )
  }
}

// (e) 100,000 no-op tasks at once on volley (forEach unbounded, the batch API) and on piscina: how far the main
// thread's memory grows, and how long its event loop stalls, while they drain.
interface Flood {
  readonly pool: string
  readonly rssGrowthMb: number
  readonly loopDelayP99Ms: number
  readonly perSecond: number
}
const floods: Array<Flood> = []
const FLOODED = ["piscina", "volley-unbounded", "volley-runall"]
for (const { pool } of active.filter((a) => FLOODED.includes(a.key))) {
  globalThis.gc?.()
  const rssBefore = process.memoryUsage.rss()
  let rssPeak = rssBefore
  const sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss())
  }, 5)
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  const start = performance.now()
  await pool.runAll(
    "noop",
    Array.from({ length: FLOOD_TASKS }, (_, i) => i)
  )
  const seconds = (performance.now() - start) / 1000
  delay.disable()
  clearInterval(sampler)
  rssPeak = Math.max(rssPeak, process.memoryUsage.rss())
  const flood = {
    pool: pool.name,
    rssGrowthMb: (rssPeak - rssBefore) / 2 ** 20,
    loopDelayP99Ms: delay.percentile(99) / 1e6,
    perSecond: FLOOD_TASKS / seconds
  }
  floods.push(flood)
  console.log(
    `  flood ${pool.name}: ${FLOOD_TASKS} at once: RSS +${flood.rssGrowthMb.toFixed(0)} MB, loop p99 ${flood.loopDelayP99Ms.toFixed(2)} ms, ${Math.round(flood.perSecond)}/s`
  )
}
for (const { pool } of active) await pool.close()

const inlineMs = median(inlineRuns)
const rows = active.map(({ key, pool }, i) => {
  const runs = measured[i]!
  const startupKey =
    key === "volley-floor"
      ? undefined
      : key.startsWith("volley-")
        ? startupKeys.find((k) => k.startsWith("volley-"))
        : key
  const startup = startupKey === undefined ? undefined : startupRuns.get(startupKey)
  return {
    key,
    pool: pool.name,
    startupMs: startup === undefined ? undefined : median(startup),
    noopPerSecond: median(runs.noopPerSecond),
    noopMainCpuUs: median(runs.noopMainCpuUs),
    cpuWallMs: pool.noThreads === undefined ? median(runs.cpuWallMs) : undefined,
    speedUp: pool.noThreads === undefined ? inlineMs / median(runs.cpuWallMs) : undefined,
    loopDelayP99Ms: pool.noThreads === undefined ? median(runs.loopDelayP99Ms) : undefined,
    runs: { ...runs, startupMs: startup ?? [] }
  }
})

const capacityAfter = await measureCapacity(rounds, CPU_TASKS)
const piscina = rows.find((r) => r.key === "piscina")
const minimal = rows.find((r) => r.key === "minimal")
const vs = (value: number | undefined, base: number | undefined) =>
  value === undefined || base === undefined ? "-" : `${(value / base).toFixed(2)}x`
const table = rows
  .map(
    (r) =>
      `| ${r.pool} | ${r.startupMs === undefined ? "-" : `${r.startupMs.toFixed(0)} ms`} | ${vs(r.startupMs, piscina?.startupMs)} | ${Math.round(r.noopPerSecond).toLocaleString("en")} | ${vs(r.noopPerSecond, piscina?.noopPerSecond)} | ${vs(r.noopPerSecond, minimal?.noopPerSecond)} | ${r.noopMainCpuUs.toFixed(1)} µs | ${vs(piscina?.noopMainCpuUs, r.noopMainCpuUs)} | ${r.cpuWallMs === undefined ? "-" : `${r.cpuWallMs.toFixed(0)} ms`} | ${r.speedUp === undefined ? "-" : `${r.speedUp.toFixed(2)}x`} | ${r.loopDelayP99Ms === undefined ? "-" : `${r.loopDelayP99Ms.toFixed(2)} ms`} |`
  )
  .join("\n")
const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, Node ${process.version}, load ${os.loadavg()[0]!.toFixed(1)}, ${new Date().toISOString().slice(0, 10)}`
const md = `# Blocking executor benchmark

\`pnpm bench blocking\` (bench/blocking/main.ts). ${machine}.
Every pool has ${THREADS} threads; all run in the same process. Each number is the median of ${RUNS} runs.

- **start-up**: from creating the pool to the first no-op result, a fresh pool each run (volley:
  building \`NodeBlocking.layer({ minWorkers: ${THREADS}, tasks })\`; the volley rows share that pool).
- **Effect floor**: \`Blocking.run\` (forEach unbounded) on an executor that runs no thread and answers 128 calls per
  macrotask (floor.ts): Effect's fiber per call, the codecs and the span, which no executor can go below.
- **no-op**: ${NOOP_TASKS.toLocaleString("en")} tasks returning their input, all submitted at once (volley: \`Blocking.run\`
  in the submit form the row names, or the batch API \`Blocking.runAll\` (one fiber for the batch, its default window of 1,024 tasks), payload and
  result Schema-validated, a span per task; others: one promise per task). After a warm-up of 2 × ${NOOP_TASKS.toLocaleString("en")}.
- **cpu**: ${CPU_TASKS} tasks of SHA-256 work calibrated to ~${CPU_MS} ms, all submitted at once; speed-up is the time to
  run them inline on the main thread (median of an inline run made right before every pool run:
  ${inlineMs.toFixed(0)} ms) divided by the pool's median wall time.
- **machine**: the same CPU work on 2 bare \`worker_threads\` vs 1 ran ${capacityBefore.toFixed(2)}x faster before the pools
  and ${capacityAfter.toFixed(2)}x after: the ceiling for any pool's speed-up in this run.
- **main CPU per no-op**: the main thread's CPU time (\`process.threadCpuUsage\`) during the no-op run, per task; the
  next column is piscina's divided by the row's (higher is cheaper). Other processes on the machine slow a pool's
  tasks/s but hardly its CPU per task, so this ratio is the steadier one on a shared machine.
- **loop p99**: main-thread event-loop delay p99 (\`monitorEventLoopDelay\`, 1 ms resolution) during the cpu run.

| pool | start-up | vs piscina | no-op tasks/s | vs piscina | vs minimal | main CPU per no-op | piscina's / this | cpu wall | speed-up | loop p99 |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${table}
${
  floods.length === 0
    ? ""
    : `
${FLOOD_TASKS.toLocaleString("en")} no-op tasks submitted at once (volley: in the form the row names; piscina: a promise each), while they drain:

| pool | main-thread RSS growth (peak) | event-loop delay p99 | tasks/s |
|---|---:|---:|---:|
${floods.map((f) => `| ${f.pool} | ${f.rssGrowthMb.toFixed(0)} MB | ${f.loopDelayP99Ms.toFixed(2)} ms | ${Math.round(f.perSecond).toLocaleString("en")} |`).join("\n")}
`
}
The machine has 2 vCPUs shared with other work, so absolute numbers move from run to run; compare ratios.
`
writeFileSync(new URL("../results/blocking.md", import.meta.url), md)
writeFileSync(
  new URL("../results/blocking.json", import.meta.url),
  `${JSON.stringify({ machine, threads: THREADS, inlineMs, rounds, capacityBefore, capacityAfter, sink, rows, floods }, null, 2)}\n`
)
console.log(md)
