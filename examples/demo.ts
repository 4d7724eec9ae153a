// `pnpm demo`: 200 GETs against an embedded server whose endpoints answer after ~50 ms,
// first one after another, then with concurrency 16, with a live progress line and a
// summary table. Exits non-zero, with a readable message, if anything fails.
import { NodeRuntime } from "@effect/platform-node"
import { Fanout } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect, Layer, Result } from "effect"
import { HttpClient, type HttpClientRequest } from "effect/http"
import { localServer } from "./support/localServer.ts"
import { bar, progressLine } from "./support/progressLine.ts"

const REQUESTS = 200
const CONCURRENCY = 16

interface Run {
  readonly label: string
  readonly wallMs: number
  readonly latencies: ReadonlyArray<number>
  readonly failures: ReadonlyArray<string>
}

// Per-request latency: the client stamps each request as it is sent, the batch's `read` as its body arrives.
const sentAt = new WeakMap<HttpClientRequest.HttpClientRequest, number>()
const stampRequests = Layer.effect(
  HttpClient.HttpClient,
  Effect.map(
    HttpClient.HttpClient,
    HttpClient.tapRequest((request) => Effect.sync(() => sentAt.set(request, performance.now())))
  )
)

const run = (label: string, urls: ReadonlyArray<string>, concurrency: number) =>
  Effect.gen(function* () {
    const latencies: Array<number> = []
    const progress = progressLine(
      (p) =>
        `${label.padEnd(24)} ${bar(p)} ${p.done}/${p.total} failed ${p.failed} in flight ${p.inFlight} retried ${p.retried}`
    )
    const started = performance.now()
    const results = yield* Fanout.allSettled(urls, {
      concurrency,
      onProgress: progress.update,
      read: (response) =>
        Effect.map(response.text, (body) => {
          latencies.push(performance.now() - (sentAt.get(response.request) ?? started))
          return body
        })
    }).pipe(Effect.ensuring(Effect.sync(progress.end)))
    const failures = results.flatMap((r, i) => (Result.isFailure(r) ? [`${urls[i]}: ${r.failure.message}`] : []))
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
  Effect.provide(stampRequests.pipe(Layer.provide(NodeHttpClient.layer({ connectionsPerOrigin: CONCURRENCY })))),
  Effect.catch((error) =>
    Console.error(`\ndemo failed: ${error.message}`).pipe(Effect.andThen(Effect.sync(() => (process.exitCode = 1))))
  )
)

NodeRuntime.runMain(program)
