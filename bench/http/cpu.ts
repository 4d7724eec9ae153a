// CPU per request of a few clients, interleaved round by round in one process against one
// origin: a steadier comparison than req/s on a shared machine.
//
//   cd bench && node --conditions=@volley/source --expose-gc http/cpu.ts <client,client,...> [/2b|/16k] [requests] [rounds]
//
// Prints, per client, the median over rounds of the process's CPU µs per request (every thread:
// the main thread plus V8's GC helpers and libuv's pool), of the main thread's alone, and of the
// time spent in garbage collection pauses.
import { PerformanceObserver } from "node:perf_hooks"
import { type Client, clients } from "./clients.ts"
import { startOrigin } from "./server.ts"

const [names = "volley,volley-stream", path = "/16k", requests = "20000", rounds = "5"] = process.argv.slice(2)
const picked = names.split(",")
for (const name of picked) {
  if (clients[name] === undefined) throw new Error(`unknown client ${name}; one of ${Object.keys(clients).join(", ")}`)
}
const total = Number(requests)

let gcMs = 0
const observer = new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) gcMs += entry.duration
})
observer.observe({ entryTypes: ["gc"] })

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const origin = await startOrigin()
try {
  const built: Array<readonly [string, Client]> = []
  for (const name of picked) {
    const client = await clients[name]!.make(origin.base)
    await client.run(origin.base + path, 2_000, 64, Date.now() + 30_000)
    built.push([name, client])
  }
  const samples = new Map<string, Array<{ all: number; main: number; gc: number }>>()
  for (let round = 0; round < Number(rounds); round++) {
    for (const [name, client] of built) {
      globalThis.gc?.()
      await new Promise((resolve) => setTimeout(resolve, 50))
      const gcBefore = gcMs
      const all = process.cpuUsage()
      const main = process.threadCpuUsage()
      const counts = await client.run(origin.base + path, total, 64, Date.now() + 60_000)
      const allUsed = process.cpuUsage(all)
      const mainUsed = process.threadCpuUsage(main)
      await new Promise((resolve) => setImmediate(resolve))
      if (counts.failed > 0) console.error(`${name}: ${counts.failed} failed`)
      const per = (us: number) => us / counts.ok
      const list = samples.get(name) ?? []
      list.push({
        all: per(allUsed.user + allUsed.system),
        main: per(mainUsed.user + mainUsed.system),
        gc: per((gcMs - gcBefore) * 1000)
      })
      samples.set(name, list)
    }
  }
  // `bench http` runs this with CPU_JSON set and reads its last line.
  if (process.env.CPU_JSON !== undefined) {
    const clients = [...samples].map(([name, list]) => ({
      name,
      allUs: Math.round(median(list.map((s) => s.all)) * 10) / 10,
      mainUs: Math.round(median(list.map((s) => s.main)) * 10) / 10
    }))
    console.log(JSON.stringify({ path, requests: total, rounds: Number(rounds), clients }))
  } else {
    console.log(`${path}, ${total} requests x ${rounds} rounds (median µs per request; all threads / main / GC pauses)`)
    for (const [name, list] of samples) {
      const f = (xs: Array<number>) => median(xs).toFixed(1).padStart(6)
      console.log(
        `${name.padEnd(16)} ${f(list.map((s) => s.all))} ${f(list.map((s) => s.main))} ${f(list.map((s) => s.gc))}   all: ${list.map((s) => s.all.toFixed(0)).join(" ")}`
      )
    }
  }
  for (const [, client] of built) await client.close()
} finally {
  observer.disconnect()
  await origin.stop()
}
