// `pnpm bench adaptive`: `perHost: Fanout.adaptive()` against hindsight (issue 14).
//
// 1. Capacity: a capacity origin (test/support/capacityOrigin.ts, in its own process) that serves
//    C = 24 at once in 20 ms, queues 16 more and answers 503 past that. The same batch runs with
//    every fixed perHost of the sweep and with the adaptive limit, in the same run, rounds
//    interleaved; each config is bounded by a request count and a deadline. Reported: goodput
//    (200s per second), p99 latency to the response head, 503s (all, and after the first 200
//    responses for the adaptive limit), and the ratio to the best fixed perHost in hindsight.
// 2. Overhead: nginx (bench/http/server.ts) answering 2 bytes, no congestion: adaptive vs fixed
//    perHost 64, concurrency 64, medians of interleaved runs.
//
// Retries follow the default policy (3, backoff, a 20% budget); goodput counts the items that
// succeeded, per second of the batch.
// Knobs: VOLLEY_BENCH_REQUESTS (capacity, per config, 10000), VOLLEY_BENCH_SECONDS (deadline per
// config, 10), VOLLEY_BENCH_RUNS (3), VOLLEY_BENCH_PLAIN_REQUESTS (20000), VOLLEY_BENCH_PLAIN_RUNS (7).
import { writeFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { join } from "node:path"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Result } from "effect"
import { HttpClient } from "effect/http"
import { type CapacityOrigin, remoteCapacityOrigin } from "../../test/support/capacityOrigin.ts"
import { startOrigin } from "../http/server.ts"

const REQUESTS = Number(process.env.VOLLEY_BENCH_REQUESTS ?? 10_000)
const SECONDS = Number(process.env.VOLLEY_BENCH_SECONDS ?? 10)
const RUNS = Number(process.env.VOLLEY_BENCH_RUNS ?? 3)
const PLAIN_REQUESTS = Number(process.env.VOLLEY_BENCH_PLAIN_REQUESTS ?? 20_000)
// Cheap (a couple of seconds each) and noisy: more of them.
const PLAIN_RUNS = Number(process.env.VOLLEY_BENCH_PLAIN_RUNS ?? 7)
const CONCURRENCY = 64
const CAPACITY = { capacity: 24, queue: 16, latency: 20 }
const SWEEP = [1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 64]

type Config = number | "adaptive"

interface Sample {
  readonly config: Config
  readonly ok: number
  readonly rejected: number
  readonly rejectedAfter200: number
  readonly ms: number
  readonly goodput: number
  readonly p99: number
  readonly finalLimit: number | undefined
}

/** A client that records each response's latency to its head and its status, in order. */
const recording = Effect.gen(function* () {
  const client = yield* HttpClient.HttpClient
  const latencies: Array<number> = []
  const statuses: Array<number> = []
  const wrapped = HttpClient.transformResponse(client, (response) =>
    Effect.suspend(() => {
      const start = performance.now()
      return Effect.tap(response, (r) =>
        Effect.sync(() => {
          latencies.push(performance.now() - start)
          statuses.push(r.status)
        })
      )
    })
  )
  return { wrapped, latencies, statuses }
})

const quantile = (xs: ReadonlyArray<number>, q: number) => {
  if (xs.length === 0) return Number.NaN
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}
const median = (xs: ReadonlyArray<number>) => quantile(xs, 0.5)

const batch = (url: (i: number) => string, n: number, config: Config, deadline: number | undefined) =>
  Effect.gen(function* () {
    const { wrapped, latencies, statuses } = yield* recording
    let finalLimit: number | undefined
    const urls = Array.from({ length: n }, (_, i) => url(i))
    const start = performance.now()
    const results = yield* Fanout.allSettled(urls, {
      concurrency: CONCURRENCY,
      perHost: config === "adaptive" ? Fanout.adaptive({ initial: 1, min: 1, max: 64 }) : config,
      ...(deadline === undefined ? {} : { deadline: `${deadline} seconds` }),
      read: (r) => r.text,
      // `origins` is built when read: only now and then, as a progress bar would.
      onProgress: (p) => {
        if (p.done % 256 !== 0 && p.done !== n) return
        const o = p.origins?.[0]
        if (o !== undefined) finalLimit = o.limit
      }
    }).pipe(Effect.provideService(HttpClient.HttpClient, wrapped))
    const ms = performance.now() - start
    const ok = results.filter(Result.isSuccess).length
    return {
      config,
      ok,
      rejected: statuses.filter((s) => s === 503).length,
      rejectedAfter200: statuses.slice(200).filter((s) => s === 503).length,
      ms,
      goodput: (ok / ms) * 1000,
      p99: quantile(latencies, 0.99),
      finalLimit
    } satisfies Sample
  })

const capacity = (origin: CapacityOrigin) =>
  Effect.gen(function* () {
    const samples: Array<Sample> = []
    for (let run = 0; run < RUNS; run++) {
      for (const config of [...SWEEP, "adaptive" as const]) {
        const sample = yield* batch((i) => `${origin.url}/r/${i}`, REQUESTS, config, SECONDS)
        samples.push(sample)
        console.log(
          `run ${run + 1} perHost ${String(config).padEnd(8)} ${sample.goodput.toFixed(0).padStart(5)} ok/s` +
            `  p99 ${sample.p99.toFixed(1).padStart(6)} ms  503s ${sample.rejected}` +
            (config === "adaptive" ? ` (after 200: ${sample.rejectedAfter200}), final limit ${sample.finalLimit}` : "")
        )
      }
    }
    return samples
  })

const plain = Effect.gen(function* () {
  const origin = yield* Effect.acquireRelease(
    Effect.promise(() => startOrigin()),
    (o) => Effect.promise(o.stop)
  )
  const samples: Array<{ config: Config; reqPerSec: number; cpuMicros: number }> = []
  // Warm-up, not measured.
  const url = () => `${origin.base}/2b`
  yield* batch(url, 2_000, 64, undefined)
  for (let run = 0; run < PLAIN_RUNS; run++) {
    for (const config of [64, "adaptive"] as const) {
      // Main-thread CPU per request too: req/s follows the neighbours' load, this much less.
      const cpu = process.threadCpuUsage()
      const s = yield* batch(url, PLAIN_REQUESTS, config, undefined)
      const used = process.threadCpuUsage(cpu)
      const cpuMicros = (used.user + used.system) / s.ok
      samples.push({ config, reqPerSec: (s.ok / s.ms) * 1000, cpuMicros })
      console.log(
        `plain run ${run + 1} perHost ${String(config).padEnd(8)} ${((s.ok / s.ms) * 1000).toFixed(0)} req/s, ${cpuMicros.toFixed(1)} µs CPU/req` +
          (config === "adaptive" ? `, final limit ${s.finalLimit}` : "")
      )
    }
  }
  return { origin: `${origin.kind} ${origin.version}`, samples }
})

const pairRatios = (samples: ReadonlyArray<{ config: Config; reqPerSec: number }>) => {
  const out: Array<number> = []
  for (let i = 0; i + 1 < samples.length; i += 2) out.push(samples[i + 1]!.reqPerSec / samples[i]!.reqPerSec)
  return out
}

const program = Effect.gen(function* () {
  const loadBefore = loadavg()[0]!
  const origin = yield* remoteCapacityOrigin(CAPACITY)
  const samples = yield* capacity(origin)
  const overhead = yield* plain
  const byConfig = new Map<Config, Array<Sample>>()
  for (const s of samples) byConfig.set(s.config, [...(byConfig.get(s.config) ?? []), s])
  const rows = [...byConfig].map(([config, xs]) => ({
    config,
    goodput: median(xs.map((x) => x.goodput)),
    p99: median(xs.map((x) => x.p99)),
    rejectedShare: median(xs.map((x) => x.rejected / Math.max(1, x.ok + x.rejected))),
    rejectedAfter200: median(xs.map((x) => x.rejectedAfter200)),
    finalLimit: median(xs.map((x) => x.finalLimit ?? Number.NaN))
  }))
  const fixed = rows.filter((r) => r.config !== "adaptive")
  const best = fixed.reduce((a, b) => (b.goodput > a.goodput ? b : a))
  const adaptive = rows.find((r) => r.config === "adaptive")!
  const plainOf = (config: Config) =>
    median(overhead.samples.filter((s) => s.config === config).map((s) => s.reqPerSec))
  const cpuOf = (config: Config) => median(overhead.samples.filter((s) => s.config === config).map((s) => s.cpuMicros))
  const results = {
    date: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "?"}, Node ${process.version}`,
    // Other processes' load: the latency the adaptive limit reads is also the client's.
    loadAverage: { before: loadBefore, after: loadavg()[0]! },
    settings: { ...CAPACITY, requests: REQUESTS, deadlineSeconds: SECONDS, runs: RUNS, concurrency: CONCURRENCY },
    rows,
    best: best.config,
    goodputRatio: adaptive.goodput / best.goodput,
    p99Ratio: adaptive.p99 / best.p99,
    plain: {
      origin: overhead.origin,
      requests: PLAIN_REQUESTS,
      fixed64: plainOf(64),
      adaptive: plainOf("adaptive"),
      ratio: plainOf("adaptive") / plainOf(64),
      cpuMicrosFixed64: cpuOf(64),
      cpuMicrosAdaptive: cpuOf("adaptive"),
      // Each run's pair (measured back to back), so drift of the machine hits both alike.
      pairRatios: pairRatios(overhead.samples),
      runs: PLAIN_RUNS
    }
  }
  const dir = join(import.meta.dirname, "..", "results")
  writeFileSync(join(dir, "adaptive.json"), `${JSON.stringify(results, null, 2)}\n`)
  writeFileSync(join(dir, "adaptive.md"), report(results))
  console.log(report(results))
}).pipe(
  Effect.scoped,
  // The default policy (3 retries, backoff, a 20% retry budget): a 503 costs a retry, then a
  // failed item once the budget is spent.
  Effect.provide(Layer.merge(NodeHttpClient.layer(), Retry.layer({})))
)

const report = (r: {
  date: string
  machine: string
  loadAverage: { before: number; after: number }
  settings: Record<string, number>
  rows: ReadonlyArray<{
    config: Config
    goodput: number
    p99: number
    rejectedShare: number
    rejectedAfter200: number
    finalLimit: number
  }>
  best: Config
  goodputRatio: number
  p99Ratio: number
  plain: {
    origin: string
    requests: number
    fixed64: number
    adaptive: number
    ratio: number
    cpuMicrosFixed64: number
    cpuMicrosAdaptive: number
    pairRatios: ReadonlyArray<number>
    runs: number
  }
}) => {
  const s = r.settings
  const lines = [
    "# Adaptive per-origin concurrency benchmark",
    "",
    `Generated by \`pnpm bench adaptive\` on ${r.date} (${r.machine}); 1-minute load average`,
    `${r.loadAverage.before.toFixed(1)} before, ${r.loadAverage.after.toFixed(1)} after (other processes share the cores: the latency`,
    "the adaptive limit reads is also the client's, so a busy machine moves its numbers most).",
    "",
    `## Against hindsight: a capacity origin (C = ${s.capacity}, queue ${s.queue}, ${s.latency} ms, 503 past C + queue)`,
    "",
    `Each config: ${s.requests} GETs (or ${s.deadlineSeconds} s, whichever ends first) at concurrency ${s.concurrency}, default retry policy,`,
    `${s.runs} runs interleaved, medians. Goodput counts 200s per second; p99 is the latency to the response head.`,
    `Adaptive: \`perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 })\`.`,
    "",
    "| perHost | goodput ok/s | p99 ms | 503 share | 503s after 200 | final limit |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...r.rows.map(
      (row) =>
        `| ${row.config === r.best ? `**${row.config}** (best fixed)` : row.config} | ${row.goodput.toFixed(0)} | ${row.p99.toFixed(1)} | ${(row.rejectedShare * 100).toFixed(2)}% | ${row.config === "adaptive" ? row.rejectedAfter200 : ""} | ${row.config === "adaptive" ? row.finalLimit : ""} |`
    ),
    "",
    `Adaptive vs best fixed perHost (${r.best}) in hindsight: goodput ${r.goodputRatio.toFixed(2)}x, p99 ${r.p99Ratio.toFixed(2)}x.`,
    "",
    "## Overhead: no congestion",
    "",
    `${r.plain.origin}, 2-byte bodies, ${r.plain.requests} GETs at concurrency 64, ${r.plain.runs} runs interleaved, medians:`,
    `fixed perHost 64 ${r.plain.fixed64.toFixed(0)} req/s, adaptive ${r.plain.adaptive.toFixed(0)} req/s: **${r.plain.ratio.toFixed(2)}x**.`,
    `Ratio of each back-to-back pair: median ${median(r.plain.pairRatios).toFixed(2)}x, from ${Math.min(...r.plain.pairRatios).toFixed(2)}x to ${Math.max(...r.plain.pairRatios).toFixed(2)}x.`,
    `Main-thread CPU per request (medians): fixed perHost 64 ${r.plain.cpuMicrosFixed64.toFixed(1)} µs, adaptive ${r.plain.cpuMicrosAdaptive.toFixed(1)} µs: ${(r.plain.cpuMicrosAdaptive / r.plain.cpuMicrosFixed64).toFixed(2)}x.`,
    ""
  ]
  return lines.join("\n")
}

Effect.runPromise(program).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
