// Item 7: `node memory.ts <url> <total> <concurrency>` streams `total` requests through
// `Fanout.stream` at `concurrency` in flight, dropping every body, and samples RSS every 50 ms.
// Prints one JSON line: RSS before (after a warm-up), peak and at the end, plus the samples.
import { Fanout } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"

const [url = "", total = "0", concurrency = "0"] = process.argv.slice(2)
const n = Number(total)
const c = Number(concurrency)

let done = 0
// A lazy input: the 100,000 URLs never exist at once either.
function* urls(count: number) {
  for (let i = 0; i < count; i++) yield url
}

const batch = (count: number, deadline: number) =>
  Fanout.stream(urls(count), { concurrency: c }).pipe(
    Stream.takeWhile(() => Date.now() < deadline),
    Stream.runForEach(() =>
      Effect.sync(() => {
        done++
      })
    ),
    Effect.map(() => {
      const finished = done
      done = 0
      return finished
    })
  )

const samples: Array<{ t: number; done: number; rssMiB: number; heapMiB: number }> = []
const mib = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10
const program = Effect.gen(function* () {
  yield* batch(5_000, Date.now() + 30_000)
  globalThis.gc?.()
  const before = process.memoryUsage().rss
  const heapBefore = process.memoryUsage().heapUsed
  const start = performance.now()
  const timer = setInterval(() => {
    const usage = process.memoryUsage()
    samples.push({
      t: Math.round(performance.now() - start),
      done,
      rssMiB: mib(usage.rss),
      heapMiB: mib(usage.heapUsed)
    })
  }, 50)
  const finished = yield* batch(n, Date.now() + 120_000)
  clearInterval(timer)
  const ms = performance.now() - start
  const end = process.memoryUsage().rss
  const peak = Math.max(end, ...samples.map((s) => s.rssMiB * 1024 * 1024))
  // What the batch still holds once garbage is collected: a leak shows here, lazy GC does not.
  globalThis.gc?.()
  const heapAfterGc = process.memoryUsage().heapUsed
  return {
    done: finished,
    ms,
    beforeMiB: mib(before),
    peakMiB: mib(peak),
    endMiB: mib(end),
    growthMiB: mib(peak - before),
    heapBeforeMiB: mib(heapBefore),
    heapPeakMiB: Math.max(...samples.map((s) => s.heapMiB)),
    heapAfterGcMiB: mib(heapAfterGc),
    // RSS when a quarter, half, three quarters of the batch were done: flat means bounded.
    rssByQuarterMiB: [0.25, 0.5, 0.75].map((q) => samples.find((s) => s.done >= q * n)?.rssMiB ?? null).concat(mib(end))
  }
}).pipe(Effect.provide(NodeHttpClient.layer()))

const result = await Effect.runPromise(program)
process.stdout.write(`${JSON.stringify({ ...result, samples })}\n`)
process.exit(0)
