// A durable crawl on 3 runner processes: submit 2,000 URLs over 20 local origins (50 ms each, at most
// 4 at once per origin cluster-wide), watch a live progress line, SIGKILL one runner halfway, and
// end with the job's summary: every URL has exactly one outcome, and the few that ran twice were
// in flight on the killed runner.
//
// PostgreSQL: DATABASE_URL if set, else a throwaway server started here from the system's
// PostgreSQL binaries (the same helper the tests use). Run: pnpm example examples/cluster-crawl.ts
import { join } from "node:path"
import { ClusterFanout, ClusterRunner } from "@volley/cluster"
import { Effect, Layer, ManagedRuntime, Stream } from "effect"
import { type Origin, startOrigins } from "../packages/cluster/test/support/origins.ts"
import { freePort } from "../packages/cluster/test/support/ports.ts"
import { type Postgres, startPostgres } from "../packages/cluster/test/support/postgres.ts"
import { type Child, spawnNode } from "../packages/cluster/test/support/processes.ts"

const job = `crawl-${Date.now()}`
let postgres: Postgres | undefined
const runners: Array<Child> = []
const origins = await startOrigins(20, 50)
try {
  let url = process.env.DATABASE_URL
  if (url === undefined) {
    postgres = await startPostgres()
    url = await postgres.createDatabase("volley")
  }
  const startRunner = async () => {
    const port = await freePort()
    const runner = spawnNode(join(import.meta.dirname, "support", "clusterRunner.ts"), [String(port), url])
    runners.push(runner)
    await runner.waitFor(`runner ready ${port}`, 60_000)
  }
  // The first one creates the tables; the other two then start together.
  await startRunner()
  await Promise.all([startRunner(), startRunner()])
  console.log(`3 runners up (pids ${runners.map((r) => r.pid).join(", ")})`)

  const client = ManagedRuntime.make(
    ClusterRunner.layerClient({ database: { url }, timings: "fast" }).pipe(Layer.orDie)
  )
  const urls = Array.from({ length: 2000 }, (_, i) => `${origins[i % origins.length]!.url}/page/${i}`)
  const started = performance.now()
  await client.runPromise(ClusterFanout.submit(job, urls, { perHost: 4, chunkSize: 25 }))

  let killedAt: number | undefined
  const final = await client.runPromise(
    ClusterFanout.watch(job, { interval: "500 millis" }).pipe(
      Stream.tap((p) =>
        Effect.promise(async () => {
          const seconds = ((performance.now() - started) / 1000).toFixed(1)
          console.log(`${seconds} s  ${p.done}/${p.total ?? "?"} done, ${p.failed} failed, ${p.inFlight} in flight`)
          if (killedAt === undefined && p.done >= 1000) {
            killedAt = Date.now()
            await runners[0]!.stop("SIGKILL")
            console.log(`SIGKILL runner ${runners[0]!.pid}: its shards move to the others in ~5 s`)
          }
        })
      ),
      Stream.runLast,
      // Bounded: a crawl that stalls ends with an error instead of hanging.
      Effect.timeout("150 seconds")
    )
  )
  const outcomes = await client.runPromise(Stream.runCollect(ClusterFanout.results(job)))
  const byRunner = new Map<string, number>()
  for (const outcome of outcomes) byRunner.set(outcome.runner, (byRunner.get(outcome.runner) ?? 0) + 1)
  const twice = origins.reduce((sum, origin) => sum + [...origin.hits.values()].filter((n) => n > 1).length, 0)
  const peak = Math.max(...origins.map((origin) => origin.peak()))
  console.log(
    `job ${job}: ${final._tag === "Some" ? final.value.succeeded : 0} succeeded in ${((performance.now() - started) / 1000).toFixed(1)} s`
  )
  console.log(
    `outcomes: ${outcomes.length} for ${urls.length} URLs (one each); by runner: ${[...byRunner].map(([r, n]) => `${r} ${n}`).join(", ")}`
  )
  console.log(`ran twice: ${twice} (in flight on the killed runner); peak per origin: ${peak} (perHost 4)`)
  if (peak > 4) explainPeak(origins.find((origin) => origin.peak() === peak)!, killedAt)
  await client.runPromise(ClusterFanout.forget(job))
  await client.dispose()
} catch (error) {
  // What the runners said, to tell a stalled cluster from a slow one.
  for (const runner of runners) console.error(`--- runner ${runner.pid}\n${runner.output().slice(-3000)}`)
  throw error
} finally {
  await Promise.all(runners.map((runner) => runner.stop("SIGTERM")))
  await Promise.all(origins.map((origin) => origin.close()))
  await postgres?.dispose()
}

// Which requests were in flight together, when, and what the runners said about their shard
// locks: a runner that stalls past the lock expiry loses its shards while its requests still run.
function explainPeak(origin: Origin, killedAt: number | undefined) {
  const { at, requests } = origin.atPeak()
  const since = (ms: number) =>
    killedAt === undefined
      ? new Date(ms).toISOString()
      : `${Math.abs(ms - killedAt)} ms ${ms < killedAt ? "before" : "after"} the SIGKILL`
  console.log(`peak at ${since(at)}: ${requests.map(([path, t]) => `${path} (from ${since(t)})`).join(", ")}`)
  for (const runner of runners) {
    const lines = runner
      .output()
      .split("\n")
      .filter((line) => /shard|lock/i.test(line))
    console.log(
      `runner ${runner.pid}: ${lines.length === 0 ? "nothing about shard locks" : lines.slice(-5).join(" | ")}`
    )
  }
}
