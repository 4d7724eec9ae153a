// One measurement in a fresh process: `node measure.ts <client> <url> <total> <concurrency> <warmup>`.
// Warms the client up, times `total` requests and prints one JSON line {ok, failed, ms}.
import { clients } from "./clients.ts"

const [name = "", url = "", total = "0", concurrency = "0", warmup = "0"] = process.argv.slice(2)
const entry = clients[name]
if (entry === undefined) throw new Error(`unknown client ${name}`)
const client = await entry.make(new URL(url).origin)
const c = Number(concurrency)
// Bounded in count and in time: a client that stalls reports what it finished by then.
await client.run(url, Number(warmup), c, Date.now() + 30_000)
globalThis.gc?.()
const start = performance.now()
const cpu = process.cpuUsage()
const counts = await client.run(url, Number(total), c, Date.now() + 60_000)
const ms = performance.now() - start
const used = process.cpuUsage(cpu)
await client.close()
// CPU time per request is the client's own cost, less sensitive to noisy neighbours than req/s.
process.stdout.write(`${JSON.stringify({ ...counts, ms, cpuUs: (used.user + used.system) / counts.ok })}\n`)
process.exit(0)
