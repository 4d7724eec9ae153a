// Blocking executor benchmark: volley's NodeBlocking pool against piscina, tinypool and workerpool,
// same process, same workloads, 2 threads each:
//   (a) 50,000 no-op tasks (1,024 in flight): tasks per second
//   (b) 400 CPU tasks of ~5 ms: wall time, and speed-up over running them inline
//   (c) main-thread event-loop delay p99 during (b)
// Each measurement is the median of 3 runs after a warm-up. Results: bench/results/blocking.{md,json}.

import { writeFileSync } from "node:fs"
import os from "node:os"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect, ManagedRuntime } from "effect"
import { Piscina } from "piscina"
import Tinypool from "tinypool"
import workerpool from "workerpool"
import { measureCapacity } from "./capacity.ts"
import * as Tasks from "./tasks.ts"
import * as Work from "./work.ts"

const THREADS = 2
const NOOP_TASKS = 50_000
const IN_FLIGHT = 1_024
const CPU_TASKS = 400
const CPU_MS = 5
const RUNS = 3

interface Pool {
  readonly name: string
  readonly run: (kind: "noop" | "spin", n: number) => Promise<number>
  readonly runMany?: (kind: "noop" | "spin", inputs: ReadonlyArray<number>, inFlight: number) => Promise<void>
  readonly close: () => Promise<unknown>
}

const pooledFile = new URL("./pooled.ts", import.meta.url).href

const pools: Record<string, () => Pool> = {
  volley: () => {
    const runtime = ManagedRuntime.make(NodeBlocking.layer({ minWorkers: THREADS, maxWorkers: THREADS }))
    const task = (kind: "noop" | "spin") => (kind === "noop" ? Tasks.noop : Tasks.spin)
    return {
      name: "volley NodeBlocking",
      run: (kind, n) => runtime.runPromise(Blocking.run(task(kind), n)),
      // volley's own idiom: Effect.forEach with bounded concurrency (what Stream.mapEffect does too)
      runMany: (kind, inputs, inFlight) =>
        runtime.runPromise(
          Effect.forEach(inputs, (n) => Blocking.run(task(kind), n), { concurrency: inFlight, discard: true })
        ),
      close: () => runtime.dispose()
    }
  },
  piscina: () => {
    const pool = new Piscina({ filename: pooledFile, minThreads: THREADS, maxThreads: THREADS })
    return { name: "piscina 5.3.2", run: (kind, n) => pool.run(n, { name: kind }), close: () => pool.destroy() }
  },
  tinypool: () => {
    const pool = new Tinypool({ filename: pooledFile, minThreads: THREADS, maxThreads: THREADS })
    return { name: "tinypool 2.2.0", run: (kind, n) => pool.run(n, { name: kind }), close: () => pool.destroy() }
  },
  workerpool: () => {
    const pool = workerpool.pool(new URL("./workerpoolWorker.ts", import.meta.url).pathname, {
      minWorkers: THREADS,
      maxWorkers: THREADS,
      workerType: "thread"
    })
    return {
      name: "workerpool 10.0.3",
      run: (kind, n) => Promise.resolve(pool.exec(kind, [n]) as PromiseLike<number>),
      close: () => Promise.resolve(pool.terminate())
    }
  }
}

/** Runs `inputs` keeping `inFlight` promises outstanding, for pools without their own batch idiom. */
const runWindowed = async (pool: Pool, kind: "noop" | "spin", inputs: ReadonlyArray<number>, inFlight: number) => {
  if (pool.runMany) return pool.runMany(kind, inputs, inFlight)
  let next = 0
  const lane = async () => {
    while (next < inputs.length) await pool.run(kind, inputs[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(inFlight, inputs.length) }, lane))
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

interface Row {
  readonly pool: string
  readonly noopPerSecond: number
  readonly cpuWallMs: number
  readonly speedUp: number
  readonly loopDelayP99Ms: number
  readonly runs: {
    noopPerSecond: Array<number>
    cpuWallMs: Array<number>
    speedUp: Array<number>
    loopDelayP99Ms: Array<number>
  }
}

// Pools run round by round (each pool once per round, in turn), so drift on a shared machine
// hits them alike. The speed-up divides one inline time, the median of the inline runs made
// before every pool run, by each pool's median wall time: a per-run inline measurement would
// add its own noise to every ratio.
const selected = Object.keys(pools).filter((k) => process.argv.length < 3 || process.argv.includes(k))
const active = selected.map((key) => pools[key]!())
for (const pool of active) {
  // Warm-up: threads started, modules loaded, JIT warm on both sides (steady state needs a few
  // rounds for volley's Effect path; every pool gets the same).
  for (let i = 0; i < 3; i++) await runWindowed(pool, "noop", noopInputs, IN_FLIGHT)
  await runWindowed(pool, "spin", cpuInputs.slice(0, 8), THREADS)
}
const measured = active.map(() => ({
  noopPerSecond: [] as Array<number>,
  cpuWallMs: [] as Array<number>,
  speedUp: [] as Array<number>,
  loopDelayP99Ms: [] as Array<number>
}))
for (let r = 0; r < RUNS; r++) {
  for (const [i, pool] of active.entries()) {
    const runs = measured[i]!
    globalThis.gc?.()
    let start = performance.now()
    await runWindowed(pool, "noop", noopInputs, IN_FLIGHT)
    runs.noopPerSecond.push(NOOP_TASKS / ((performance.now() - start) / 1000))
    const inlineMs = inline()
    inlineRuns.push(inlineMs)
    globalThis.gc?.()
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    start = performance.now()
    await runWindowed(pool, "spin", cpuInputs, CPU_TASKS)
    const wall = performance.now() - start
    delay.disable()
    runs.cpuWallMs.push(wall)
    runs.speedUp.push(inlineMs / wall)
    runs.loopDelayP99Ms.push(delay.percentile(99) / 1e6)
    console.log(
      `  round ${r + 1} ${pool.name.padEnd(20)} no-op ${Math.round(runs.noopPerSecond.at(-1)!).toLocaleString("en")}/s  cpu ${wall.toFixed(0)} ms (inline ${inlineMs.toFixed(0)} ms)  loop p99 ${runs.loopDelayP99Ms.at(-1)!.toFixed(2)} ms`
    )
  }
}
for (const pool of active) await pool.close()
const inlineMs = median(inlineRuns)
const rows: Array<Row> = active.map((pool, i) => {
  const runs = measured[i]!
  return {
    pool: pool.name,
    noopPerSecond: median(runs.noopPerSecond),
    cpuWallMs: median(runs.cpuWallMs),
    speedUp: inlineMs / median(runs.cpuWallMs),
    loopDelayP99Ms: median(runs.loopDelayP99Ms),
    runs
  }
})

const capacityAfter = await measureCapacity(rounds, CPU_TASKS)
const piscina = rows.find((r) => r.pool.startsWith("piscina"))
const volley = rows.find((r) => r.pool.startsWith("volley"))
const ratio = piscina && volley ? volley.noopPerSecond / piscina.noopPerSecond : undefined
const table = rows
  .map(
    (r) =>
      `| ${r.pool} | ${Math.round(r.noopPerSecond).toLocaleString("en")} | ${piscina ? (r.noopPerSecond / piscina.noopPerSecond).toFixed(2) : "-"}x | ${r.cpuWallMs.toFixed(0)} ms | ${r.speedUp.toFixed(2)}x | ${r.loopDelayP99Ms.toFixed(2)} ms |`
  )
  .join("\n")
const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`
const md = `# Blocking executor benchmark

\`pnpm bench blocking\` (bench/blocking/main.ts). ${machine}.
Every pool has ${THREADS} threads; all run in the same process after a warm-up of 3 × ${NOOP_TASKS.toLocaleString("en")}
no-op tasks and a few CPU tasks each, then ${RUNS} rounds in which each pool runs once, in turn.
Each number is the median of the ${RUNS} runs.

- **no-op**: ${NOOP_TASKS.toLocaleString("en")} tasks returning their input, ${IN_FLIGHT} in flight (volley: \`Effect.forEach\`
  with \`concurrency: ${IN_FLIGHT}\` over \`Blocking.run\`, payload and result Schema-validated, a span per task; others:
  ${IN_FLIGHT} promise lanes over \`run\`/\`exec\`).
- **cpu**: ${CPU_TASKS} tasks of SHA-256 work calibrated to ~${CPU_MS} ms, all submitted at once; speed-up is the time to
  run them inline on the main thread (the median of an inline run made right before every pool run:
  ${inlineMs.toFixed(0)} ms) divided by the pool's median wall time.
- **machine**: the same CPU work on 2 bare \`worker_threads\` vs 1 ran ${capacityBefore.toFixed(2)}x faster before the pools
  and ${capacityAfter.toFixed(2)}x after: the ceiling for any pool's speed-up in this run (2 vCPUs shared with other work).
- **loop p99**: main-thread event-loop delay p99 (\`monitorEventLoopDelay\`, 1 ms resolution) during the cpu run.

| pool | no-op tasks/s | vs piscina | cpu wall | speed-up | loop p99 |
|---|---:|---:|---:|---:|---:|
${table}

Targets: no-op ≥ 2x piscina (${ratio === undefined ? "n/a" : `${ratio.toFixed(2)}x`}), speed-up ≥ 1.85x, loop p99 < 3 ms.
The machine has 2 vCPUs shared with other work, so absolute numbers move from run to run; compare ratios.
`
writeFileSync(new URL("../results/blocking.md", import.meta.url), md)
writeFileSync(
  new URL("../results/blocking.json", import.meta.url),
  `${JSON.stringify({ machine, threads: THREADS, inlineMs, rounds, capacityBefore, capacityAfter, sink, rows }, null, 2)}\n`
)
console.log(md)
