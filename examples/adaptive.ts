// Adaptive per-origin concurrency: 1,500 GETs to an embedded origin that serves 16 requests at
// once (20 ms each), queues 16 more and answers 503 past that; halfway through, its capacity
// drops to 4. With `perHost: Fanout.adaptive()` the batch finds 16 from a start of 1, follows
// the drop, and shows each origin's limit, requests in flight, latency baseline and the reason
// of its last change live, then the limit gauge from Effect's metrics.
//
//   pnpm example examples/adaptive.ts
import { createServer, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { NodeRuntime } from "@effect/platform-node"
import { Fanout } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect, Metric, Result } from "effect"
import { bar, progressLine } from "./support/progressLine.ts"

// At most `capacity` served at once, `queue` more waiting, 503 past that.
const capacityOrigin = (state: { capacity: number }, queue: number, latencyMs: number) =>
  Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createServer>>((resume) => {
      let serving = 0
      const waiting: Array<ServerResponse> = []
      const serve = (res: ServerResponse) => {
        serving++
        setTimeout(() => {
          res.end("ok")
          serving--
          while (serving < state.capacity && waiting.length > 0) serve(waiting.shift()!)
        }, latencyMs)
      }
      const server = createServer((_, res) => {
        if (serving < state.capacity) serve(res)
        else if (waiting.length < queue) waiting.push(res)
        else res.writeHead(503).end("busy")
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

const program = Effect.gen(function* () {
  const state = { capacity: 16 }
  const url = yield* capacityOrigin(state, 16, 20)
  const urls = Array.from({ length: 1500 }, (_, i) => `${url}/item/${i}`)
  const line = progressLine((p) => {
    const o = p.origins?.[0]
    const origin = o === undefined ? "" : `  limit ${o.limit} (${o.reason})  in flight ${o.inFlight}`
    const baseline = o?.baselineMillis === undefined ? "" : `  baseline ${o.baselineMillis.toFixed(1)} ms`
    return `${bar(p)} ${p.done}/${p.total}  capacity ${state.capacity}${origin}${baseline}  retried ${p.retried}`
  })
  const results = yield* Fanout.allSettled(urls, {
    concurrency: 64,
    perHost: Fanout.adaptive({ initial: 1, min: 1, max: 64 }),
    onProgress: (p) => {
      if (p.done >= 750) state.capacity = 4
      line.update(p)
    }
  }).pipe(Effect.ensuring(Effect.sync(line.end)))
  const failed = results.filter(Result.isFailure).length
  yield* Console.log(`${results.length - failed}/${results.length} ok, ${failed} failed`)
  for (const metric of yield* Metric.snapshot) {
    if (metric.id === "volley_fanout_origin_limit") {
      yield* Console.log(`metric ${metric.id} ${JSON.stringify(metric.attributes)} = ${JSON.stringify(metric.state)}`)
    }
  }
}).pipe(Effect.scoped)

NodeRuntime.runMain(program.pipe(Effect.provide(NodeHttpClient.layer())))
