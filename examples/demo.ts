// `pnpm demo`: 200 GETs against an embedded server whose endpoints answer after ~50 ms,
// first one after another, then with concurrency 16, with a live progress line and a
// summary table. Exits non-zero, with a readable message, if anything fails.
import { NodeRuntime } from "@effect/platform-node"
import { Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect } from "effect"
import { localServer } from "./support/localServer.ts"

const REQUESTS = 200
const CONCURRENCY = 16

interface Run {
  readonly label: string
  readonly wallMs: number
  readonly latencies: ReadonlyArray<number>
  readonly failures: ReadonlyArray<string>
}

const progress = (label: string, total: number) => {
  const tty = process.stdout.isTTY === true
  let done = 0
  let failed = 0
  let inFlight = 0
  let last = 0
  const draw = (force: boolean) => {
    const now = performance.now()
    if (!force && now - last < (tty ? 50 : 1000)) return
    last = now
    const width = 30
    const filled = Math.round((done / total) * width)
    const line = `${label.padEnd(24)} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} failed ${failed} in flight ${inFlight}`
    if (tty) process.stdout.write(`\r${line}`)
    else console.log(line)
  }
  return {
    start: () => {
      inFlight++
    },
    end: (ok: boolean) => {
      inFlight--
      done++
      if (!ok) failed++
      draw(done === total)
      if (done === total && tty) process.stdout.write("\n")
    }
  }
}

const run = (label: string, urls: ReadonlyArray<string>, concurrency: number) =>
  Effect.gen(function* () {
    const bar = progress(label, urls.length)
    const latencies: Array<number> = []
    const failures: Array<string> = []
    const started = performance.now()
    yield* Effect.forEach(
      urls,
      (url) =>
        Effect.suspend(() => {
          bar.start()
          const t0 = performance.now()
          return Http.getText(url).pipe(
            Effect.match({
              onSuccess: () => {
                latencies.push(performance.now() - t0)
                bar.end(true)
              },
              onFailure: (error) => {
                failures.push(`${url}: ${error.message}`)
                bar.end(false)
              }
            })
          )
        }),
      { concurrency, discard: true }
    )
    return { label, wallMs: performance.now() - started, latencies, failures } satisfies Run
  })

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0
    ? Number.NaN
    : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN)

const table = (runs: ReadonlyArray<Run>) => {
  const baseline = runs[0]?.wallMs ?? Number.NaN
  const rows = runs.map((r) => {
    const sorted = [...r.latencies].sort((a, b) => a - b)
    return [
      r.label,
      String(r.latencies.length + r.failures.length),
      String(r.failures.length),
      `${(r.wallMs / 1000).toFixed(2)} s`,
      `${(baseline / r.wallMs).toFixed(1)}x`,
      `${percentile(sorted, 50).toFixed(1)} ms`,
      `${percentile(sorted, 99).toFixed(1)} ms`
    ]
  })
  const header = ["run", "requests", "failures", "wall time", "speed-up", "p50", "p99"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]?.length ?? 0)))
  const line = (cells: ReadonlyArray<string>) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join("  ")
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

const program = Effect.gen(function* () {
  const server = yield* localServer(50)
  const urls = server.urls(REQUESTS)
  yield* Console.log(`volley demo: ${REQUESTS} GETs against ${server.url} (each answers after ~50 ms)\n`)
  const sequential = yield* run("one after another", urls, 1)
  const parallel = yield* run(`concurrency ${CONCURRENCY}`, urls, CONCURRENCY)
  yield* Console.log(`\n${table([sequential, parallel])}`)
  const failures = [...sequential.failures, ...parallel.failures]
  if (failures.length > 0) {
    return yield* Effect.fail(new Error(`${failures.length} request(s) failed, first: ${failures[0]}`))
  }
}).pipe(
  Effect.scoped,
  Effect.provide(NodeHttpClient.layer({ connectionsPerOrigin: CONCURRENCY })),
  Effect.catch((error) =>
    Console.error(`\ndemo failed: ${error.message}`).pipe(Effect.andThen(Effect.sync(() => (process.exitCode = 1))))
  )
)

NodeRuntime.runMain(program)
