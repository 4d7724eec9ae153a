// One measurement in a fresh process: `node measure.ts <client> <url> <total> <concurrency> <warmup>`.
// Warms the client up, times `total` requests and prints one JSON line {ok, failed, ms, cpuUs, majorGcs}.
import { constants, PerformanceObserver } from "node:perf_hooks"
import { clients } from "./clients.ts"

const [name = "", url = "", total = "0", concurrency = "0", warmup = "0"] = process.argv.slice(2)
const entry = clients[name]
if (entry === undefined) throw new Error(`unknown client ${name}`)
const client = await entry.make(new URL(url).origin)
const c = Number(concurrency)
// Bounded in count and in time: a client that stalls reports what it finished by then.
await client.run(url, Number(warmup), c, Date.now() + 30_000)
globalThis.gc?.()
// Full (mark-compact) collections during the timed run. Bodies read as bytes allocate little on
// the JS heap but 16 KiB of socket buffer each outside it, which V8 counts toward its limit for
// a full collection: some runs of the same client go through a few, others through dozens
// (each tens of ms on this heap), so the count goes with every sample.
let majorGcs = 0
const gcs = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if ((entry as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) majorGcs++
  }
})
gcs.observe({ entryTypes: ["gc"] })
const start = performance.now()
const cpu = process.cpuUsage()
const counts = await client.run(url, Number(total), c, Date.now() + 60_000)
const ms = performance.now() - start
const used = process.cpuUsage(cpu)
// GC entries are delivered asynchronously: let the last ones arrive.
await new Promise((resolve) => setTimeout(resolve, 10))
gcs.disconnect()
await client.close()
// CPU time per request is the client's own cost, less sensitive to noisy neighbours than req/s.
process.stdout.write(`${JSON.stringify({ ...counts, ms, cpuUs: (used.user + used.system) / counts.ok, majorGcs })}\n`)
process.exit(0)
