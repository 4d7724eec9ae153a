// Where a client's time goes: runs one client of the http scenario against the same origin,
// CPU-profiles only the timed requests (V8's sampling profiler through node:inspector) and
// prints CPU µs per request by area, then the hottest functions.
//
//   cd bench && node --conditions=@volley/source http/profile.ts <client> [/2b|/16k] [requests]
//
// Compare clients by the per-request numbers, not by req/s: on a shared machine the
// profile's busy time moves much less than throughput.
import { Session } from "node:inspector/promises"
import { clients } from "./clients.ts"
import { startOrigin } from "./server.ts"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly hitCount: number
}

const [name = "volley", path = "/2b", requests = "20000"] = process.argv.slice(2)
const entry = clients[name]
if (entry === undefined) throw new Error(`unknown client ${name}; one of ${Object.keys(clients).join(", ")}`)
const total = Number(requests)
const INTERVAL_US = 200

// Areas, first match wins.
const areas: ReadonlyArray<readonly [string, (fn: string, url: string) => boolean]> = [
  ["GC", (fn) => fn === "(garbage collector)"],
  ["socket writes (native)", (fn) => fn === "writeLatin1String" || fn === "writeBuffer" || fn === "writev"],
  ["undici request() API + body Readable", (_, url) => url.includes("/undici/lib/api/")],
  ["undici dispatcher + HTTP/1 parser", (_, url) => url.includes("/undici/")],
  ["Effect HttpClient wrapper (span, URL, tracking)", (_, url) => url.includes("effect/dist/http/")],
  ["Effect runtime (fibers, context)", (_, url) => url.includes("effect/dist/")],
  ["platform-node undici client", (_, url) => url.includes("platform-node")],
  ["volley NodeHttpClient", (_, url) => url.includes("/packages/node/")],
  ["OpenTelemetry", (_, url) => url.includes("opentelemetry")],
  ["volley core (Fanout, Retry)", (_, url) => url.includes("/packages/core/")],
  ["node streams", (_, url) => url.includes("node:internal/streams")],
  ["node events, AbortSignal, async_hooks", (_, url) => /events|abort|event_target|async_hooks/.test(url)],
  ["other native", (_, url) => url === ""],
  ["other JS", () => true]
]

const origin = await startOrigin()
try {
  const client = await entry.make(origin.base)
  await client.run(origin.base + path, 2_000, 64, Date.now() + 30_000)
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: INTERVAL_US })
  await session.post("Profiler.start")
  const start = performance.now()
  const counts = await client.run(origin.base + path, total, 64, Date.now() + 60_000)
  const ms = performance.now() - start
  const { profile } = await session.post("Profiler.stop")
  session.disconnect()
  await client.close()

  const byArea = new Map<string, number>()
  const byFunction = new Map<string, number>()
  let busy = 0
  for (const node of profile.nodes as ReadonlyArray<Node>) {
    const { functionName: fn, url, lineNumber } = node.callFrame
    if (fn === "(idle)" || fn === "(program)" || node.hitCount === 0) continue
    busy += node.hitCount
    const area = areas.find(([, test]) => test(fn, url))?.[0] ?? "other JS"
    byArea.set(area, (byArea.get(area) ?? 0) + node.hitCount)
    const key = `${fn || "(anonymous)"} ${url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/work\/main\//, "")}:${lineNumber + 1}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + node.hitCount)
  }
  const us = (hits: number) => ((hits * INTERVAL_US) / counts.ok).toFixed(1).padStart(6)
  const pct = (hits: number) => `${((100 * hits) / busy).toFixed(1).padStart(5)}%`
  console.log(`${name} ${path}: ${counts.ok} ok, ${counts.failed} failed, ${Math.round((counts.ok / ms) * 1000)} req/s`)
  console.log(`busy CPU per request: ${us(busy).trim()} µs (sampled every ${INTERVAL_US} µs)\n`)
  for (const [area, hits] of [...byArea].sort((a, b) => b[1] - a[1]))
    console.log(`${us(hits)} µs ${pct(hits)}  ${area}`)
  console.log("\nhottest functions (self time):")
  for (const [fn, hits] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP ?? 25)))
    console.log(`${pct(hits)}  ${fn}`)
} finally {
  await origin.stop()
}
