// Main-thread CPU per request of adaptive batches against fixed `perHost` ones on a plain nginx
// origin (2 bytes, no congestion), interleaved in one process: on a shared machine req/s swings
// with the neighbours, CPU per request much less. CONFIGS lists them (default "64,a1": fixed 64,
// then adaptive from initial 1; the first is the baseline). PROFILE=1 profiles each batch (V8's
// sampling profiler) and prints CPU per request by area (TOP=n: the n hottest functions);
// TRACE=1 prints the adaptive limit / reason / latency / baseline every 1,000 responses.
//
//   cd bench && pnpm exec node --conditions=@volley/source adaptive/cpu.ts [requests] [rounds]
import { Session } from "node:inspector/promises"
import { loadavg } from "node:os"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, ManagedRuntime, Result } from "effect"
import { startOrigin } from "../http/server.ts"

const [requests = "20000", rounds = "6"] = process.argv.slice(2)
const total = Number(requests)
const origin = await startOrigin()
// RETRY=1: under the default retry policy, as `pnpm bench adaptive` runs.
const runtime = ManagedRuntime.make(
  process.env.RETRY === "1" ? Layer.merge(NodeHttpClient.layer(), Retry.layer({})) : NodeHttpClient.layer()
)
let lastLimit: number | undefined
const TRACE = process.env.TRACE === "1"
let traced = -1
const trace: Array<string> = []
// Configs: a number is a fixed perHost, `aN` an adaptive one from initial N.
const CONFIGS = (process.env.CONFIGS ?? "64,a1").split(",")
const batch = (config: string) =>
  runtime.runPromise(
    Effect.map(
      Fanout.allSettled(
        Array.from({ length: total }, () => `${origin.base}/2b`),
        {
          concurrency: 64,
          perHost: config.startsWith("a")
            ? Fanout.adaptive({ initial: Number(config.slice(1)), min: 1, max: 64 })
            : Number(config),
          read: (r) => r.text,
          onProgress: (p) => {
            if (p.done === total) lastLimit = p.origins?.[0]?.limit
            if (TRACE && config.startsWith("a") && p.done % 1000 === 0) {
              const o = p.origins?.[0]
              if (o !== undefined && p.done !== traced) {
                traced = p.done
                trace.push(`${o.limit}/${o.reason}/${o.latencyMillis?.toFixed(1)}/${o.baselineMillis?.toFixed(1)}`)
              }
            }
          }
        }
      ),
      (rs) => rs.filter(Result.isSuccess).length
    )
  )
const measure = async (config: string) => {
  const cpu = process.threadCpuUsage()
  const start = performance.now()
  const ok = await batch(config)
  const ms = performance.now() - start
  const used = process.threadCpuUsage(cpu)
  return { us: (used.user + used.system) / ok, reqPerSec: (ok / ms) * 1000 }
}
const session = process.env.PROFILE === "1" ? new Session() : undefined
try {
  for (const config of CONFIGS) await batch(config)
  if (session !== undefined) {
    session.connect()
    await session.post("Profiler.enable")
    await session.post("Profiler.setSamplingInterval", { interval: 200 })
  }
  const cpu = new Map<string, Array<number>>(CONFIGS.map((c) => [c, []]))
  for (let round = 0; round < Number(rounds); round++) {
    const line: Array<string> = []
    for (const config of CONFIGS) {
      if (session !== undefined) await session.post("Profiler.start")
      const m = await measure(config)
      if (session !== undefined)
        report(config, (await session.post("Profiler.stop")).profile as unknown as Profile, total)
      cpu.get(config)!.push(m.us)
      line.push(
        `${config} ${m.us.toFixed(1)} µs ${m.reqPerSec.toFixed(0)}/s${config.startsWith("a") ? ` (limit ${lastLimit})` : ""}`
      )
      if (TRACE && config.startsWith("a")) console.log(`  ${trace.splice(0).join(" ")}`)
    }
    console.log(`round ${round + 1}: ${line.join(", ")}; load ${loadavg()[0]!.toFixed(1)}`)
  }
  const med = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
  const base = med(cpu.get(CONFIGS[0]!)!)
  for (const config of CONFIGS) {
    const m = med(cpu.get(config)!)
    console.log(`median ${config}: ${m.toFixed(1)} µs/req, ${(m / base).toFixed(3)}x ${CONFIGS[0]}`)
  }
} finally {
  session?.disconnect()
  await runtime.dispose()
  await origin.stop()
}

interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
}
interface ProfileNode {
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly hitCount: number
}
function report(label: string, profile: Profile, requests: number) {
  const byFunction = new Map<string, number>()
  const byArea = new Map<string, number>()
  let busy = 0
  for (const node of profile.nodes) {
    const { functionName: fn, url, lineNumber } = node.callFrame
    if (fn === "(idle)" || fn === "(program)" || node.hitCount === 0) continue
    busy += node.hitCount
    const area =
      fn === "(garbage collector)"
        ? "GC"
        : url.includes("/undici/")
          ? "undici"
          : url.includes("effect/dist/")
            ? "effect"
            : url.includes("/packages/core/")
              ? "volley core"
              : url.includes("/packages/node/")
                ? "volley node"
                : "other"
    byArea.set(area, (byArea.get(area) ?? 0) + node.hitCount)
    const key = `${fn || "(anonymous)"} ${url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/work\/main\//, "")}:${lineNumber + 1}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + node.hitCount)
  }
  const us = (hits: number) => ((hits * 200) / requests).toFixed(2)
  console.log(
    `  ${label}: busy ${us(busy)} µs/req; ${[...byArea]
      .sort((a, b) => b[1] - a[1])
      .map(([a, h]) => `${a} ${us(h)}`)
      .join(", ")}`
  )
  if (process.env.TOP === undefined) return
  for (const [fn, hits] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, Number(process.env.TOP)))
    console.log(`    ${us(hits).padStart(6)}  ${fn}`)
}
