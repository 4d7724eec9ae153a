// Fan-out with volley: 120 GETs over two embedded origins, one fast and one slow (300 ms per
// answer), plus a flaky endpoint that answers 503 twice before it works. The batch runs at
// most 12 requests at once and 4 per origin, so the slow origin never holds every slot; the
// flaky requests are retried with backoff; a progress line shows done/failed/in flight/retried.
//
//   pnpm example examples/fanout.ts
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { NodeRuntime } from "@effect/platform-node"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect, Layer, Result } from "effect"
import { bar, progressLine } from "./support/progressLine.ts"

// An origin on 127.0.0.1 that answers after `delayMs` and counts its peak concurrency.
const origin = (delayMs: number) =>
  Effect.acquireRelease(
    Effect.callback<{ server: Server; peak: () => number }>((resume) => {
      let inFlight = 0
      let peak = 0
      const flaky = new Map<string, number>()
      const server = createServer((req, res) => {
        inFlight++
        peak = Math.max(peak, inFlight)
        res.on("close", () => inFlight--)
        const seen = (flaky.get(req.url ?? "") ?? 0) + 1
        flaky.set(req.url ?? "", seen)
        // /flaky/*: two 503s, then a success
        if (req.url?.startsWith("/flaky") && seen <= 2) return void res.writeHead(503).end("busy")
        setTimeout(() => res.end(`hello from ${req.url}`), delayMs)
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, peak: () => peak })))
    }),
    ({ server }) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(
    Effect.map(({ server, peak }) => ({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, peak }))
  )

const program = Effect.gen(function* () {
  const fast = yield* origin(10)
  const slow = yield* origin(300)
  const urls = [
    ...Array.from({ length: 20 }, (_, i) => `${slow.url}/slow/${i}`),
    ...Array.from({ length: 90 }, (_, i) => `${fast.url}/fast/${i}`),
    ...Array.from({ length: 10 }, (_, i) => `${fast.url}/flaky/${i}`)
  ]
  const progress = progressLine(
    (p) => `${bar(p)} ${p.done}/${p.total}  failed ${p.failed}  in flight ${p.inFlight}  retried ${p.retried}`
  )
  const started = performance.now()
  const results = yield* Fanout.allSettled(urls, {
    concurrency: 12,
    perHost: 4,
    deadline: "30 seconds",
    read: (response) => response.text,
    onProgress: progress.update
  }).pipe(Effect.ensuring(Effect.sync(progress.end)))
  const failed = results.filter(Result.isFailure)
  yield* Console.log(
    `${results.length - failed.length}/${results.length} ok in ${Math.round(performance.now() - started)} ms; ` +
      `peak in flight: slow origin ${slow.peak()}, fast origin ${fast.peak()} (limit 4 each, 12 in all)`
  )
  for (const failure of failed) yield* Console.log(`failed: ${failure.failure.message}`)
  if (failed.length > 0) return yield* Effect.fail(new Error(`${failed.length} requests failed`))
}).pipe(Effect.scoped)

// Retries: 3 at most, 50 ms base backoff with full jitter, idempotent methods only.
const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 3, baseDelay: "50 millis" }))

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
