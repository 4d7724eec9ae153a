// The adaptive limit against the benchmark's capacity origin (C = 24, queue 16, 20 ms), traced:
// every change of the limit's reason, with the limit, latency and baseline, and the share of
// time spent at each limit. For tuning; the numbers to report come from main.ts.
//
//   cd bench && pnpm exec node --conditions=@volley/source adaptive/trace.ts [requests] [fixed perHost to compare]
import { loadavg } from "node:os"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Result } from "effect"
import { remoteCapacityOrigin } from "../../test/support/capacityOrigin.ts"

const [requests = "10000", fixed = "32"] = process.argv.slice(2)
const total = Number(requests)
const program = Effect.gen(function* () {
  const origin = yield* remoteCapacityOrigin({ capacity: 24, queue: 16, latency: 20 })
  for (const config of ["adaptive", fixed, "adaptive", fixed]) {
    const lines: Array<string> = []
    let last = ""
    const start = performance.now()
    const results = yield* Fanout.allSettled(
      Array.from({ length: total }, (_, i) => `${origin.url}/r/${i}`),
      {
        concurrency: 64,
        perHost: config === "adaptive" ? Fanout.adaptive({ initial: 1, min: 1, max: 64 }) : Number(config),
        deadline: "10 seconds",
        onProgress: (p) => {
          const o = p.origins?.[0]
          if (o === undefined) return
          const key = `${o.reason} ${o.limit}`
          if (key === last) return
          last = key
          lines.push(
            `${(performance.now() - start).toFixed(0).padStart(5)} ms #${p.done} ${o.reason} ${o.limit} lat ${o.latencyMillis?.toFixed(1)} base ${o.baselineMillis?.toFixed(1)}`
          )
        }
      }
    )
    const ms = performance.now() - start
    const ok = results.filter(Result.isSuccess).length
    const stats = yield* origin.stats
    if (config === "adaptive")
      console.log(
        lines
          .filter((l) => !l.includes("slow-start") && !l.includes("headroom"))
          .slice(0, 60)
          .join("\n")
      )
    console.log(
      `${config}: ${((ok / ms) * 1000).toFixed(0)} ok/s, ${stats.rejected} 503s so far, load ${loadavg()[0]!.toFixed(1)}`
    )
  }
}).pipe(Effect.scoped, Effect.provide(Layer.merge(NodeHttpClient.layer(), Retry.layer({}))))
Effect.runPromise(program).then(() => process.exit(0))
