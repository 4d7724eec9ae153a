// End to end: a private PostgreSQL, 3 runner processes, this process as the client, 50 loopback origins.
// The root package does not depend on @volley/cluster (yet), so its source is imported by path.

import { ClusterFanout } from "@volley/cluster"
import { Effect, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { assert, describe, it } from "vitest"
import { firstTakeover } from "../../packages/cluster/test/support/cluster.ts"
import { clusterSuite } from "../../packages/cluster/test/support/suite.ts"

const perHost = 4
const suite = clusterSuite({ runners: 3, concurrency: 64 }, { count: 50, delayMillis: 10 })
const { run } = suite

const urls = (job: string, count: number, query = "") =>
  Array.from({ length: count }, (_, i) => `${suite.origins[i % suite.origins.length]!.url}/${job}/${i}${query}`)

/** Hits per path of one job across every origin: a path hit twice is an item that ran twice. */
const hitsOf = (job: string) => {
  const hits: Array<number> = []
  for (const origin of suite.origins) {
    for (const [path, count] of origin.hits) if (path.startsWith(`/${job}/`)) hits.push(count)
  }
  return hits
}

/** Rows and distinct items in the results table for a job. */
const stored = (job: string) =>
  run(
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        sql<{
          rows: string
          items: string
        }>`select count(*) as rows, count(distinct item) as items from volley_results where job_id = ${job}`
    )
  ).then(([row]) => ({ rows: Number(row!.rows), items: Number(row!.items) }))

const waitUntil = async (check: () => Promise<boolean>, timeoutMillis: number) => {
  const until = Date.now() + timeoutMillis
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`condition not met in ${timeoutMillis} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

describe("ClusterFanout on 3 runners", () => {
  it("completes a job of 5,000 requests across 50 origins, never more than perHost at once per origin", async () => {
    const started = Date.now()
    const total = await run(ClusterFanout.submit("big", urls("big", 5000), { perHost, chunkSize: 50 }))
    const final = await run(ClusterFanout.wait("big", { interval: "200 millis", timeout: "60 seconds" }))
    const seconds = (Date.now() - started) / 1000
    console.log(`5,000 requests on 3 runners: ${seconds.toFixed(1)} s, ${(5000 / seconds).toFixed(0)} items/s`)
    assert.strictEqual(total, 5000)
    assert.deepStrictEqual([final.finished, final.done, final.succeeded, final.inFlight], [true, 5000, 5000, 0])
    assert.strictEqual(final.origins.length, 50)
    const outcomes = await run(Stream.runCollect(ClusterFanout.results("big")))
    assert.deepStrictEqual(
      outcomes.map((o) => o.index),
      Array.from({ length: 5000 }, (_, i) => i)
    )
    assert.isTrue(outcomes.every((o) => o.result._tag === "Success" && o.result.success.bytes === 2))
    // Every runner took part, and the bound held cluster-wide while being used to the full.
    assert.strictEqual(new Set(outcomes.map((o) => o.runner)).size, 3)
    const peaks = suite.origins.map((origin) => origin.peak())
    assert.isAtMost(Math.max(...peaks), perHost)
    assert.strictEqual(Math.max(...peaks), perHost)
    assert.isTrue(hitsOf("big").every((count) => count === 1))
  }, 80_000)

  it("completes a job with one outcome per item when a runner is SIGKILLed mid-job", async () => {
    const job = "kill"
    // 200 ms per request: 60 per origin at 4 at once take 3 s, so the victim is mid-way through its origins.
    await run(ClusterFanout.submit(job, urls(job, 3000, "?delay=200"), { perHost, chunkSize: 20 }))
    await waitUntil(async () => (await run(ClusterFanout.progress(job))).done >= 600, 30_000)
    const victim = suite.cluster.runners[0]!
    const victimName = `127.0.0.1:${victim.port}`
    // In flight at the kill, cluster-wide: requests the origins received that have no stored outcome
    // yet (answered but not yet written counts too: a runner killed then runs them again).
    const storedBefore = (await stored(job)).rows
    const inFlightAtKill = hitsOf(job).reduce((sum, count) => sum + count, 0) - storedBefore
    const killedAt = Date.now()
    await victim.child().stop("SIGKILL")
    const final = await run(ClusterFanout.wait(job, { interval: "200 millis", timeout: "60 seconds" }))
    const recovered = (Date.now() - killedAt) / 1000
    const reruns = hitsOf(job).filter((count) => count > 1).length
    // Recovery: from the kill to the first outcome another runner wrote in a chunk the victim had started.
    const takeover = await run(firstTakeover(job, victimName))
    const recovery = takeover === undefined ? NaN : (takeover.getTime() - killedAt) / 1000
    console.log(
      `SIGKILL: survivors took over the victim's chunks ${recovery.toFixed(1)} s after the kill; job done after ` +
        `${recovered.toFixed(1)} s; ${reruns} items re-run (${inFlightAtKill} in flight at the kill)`
    )
    assert.isAbove(recovery, 0)
    assert.deepStrictEqual([final.done, final.succeeded], [3000, 3000])
    assert.deepStrictEqual(await stored(job), { rows: 3000, items: 3000 })
    assert.isAtMost(reruns, inFlightAtKill)
    assert.isAtMost(Math.max(...suite.origins.map((origin) => origin.peak())), perHost)
    await victim.start()
  }, 80_000)

  it("runs nothing twice when a runner is stopped with SIGTERM mid-job", async () => {
    const job = "term"
    const leaving = suite.cluster.runners[1]!
    let passed = false
    try {
      await run(ClusterFanout.submit(job, urls(job, 2000), { perHost, chunkSize: 50 }))
      await waitUntil(async () => (await run(ClusterFanout.progress(job))).done >= 500, 30_000)
      const child = leaving.child()
      const stopping = Date.now()
      await child.stop("SIGTERM", 30_000)
      const stopMillis = Date.now() - stopping
      console.log(`SIGTERM: the runner stopped in ${stopMillis} ms`)
      const exit = await Promise.race([child.exited, new Promise((resolve) => setTimeout(resolve, 100, "running"))])
      const final = await run(
        ClusterFanout.wait(job, { interval: "200 millis", timeout: "60 seconds" }).pipe(
          // A job that does not end says where it stood and what the leaving runner did.
          Effect.catchTag("TimeoutError", () =>
            Effect.flatMap(ClusterFanout.progress(job), (progress) =>
              Effect.die(
                new Error(
                  `job not done 60 s after the runner stopped (stop took ${stopMillis} ms, exit ${String(exit)}): ` +
                    `${JSON.stringify({ done: progress.done, inFlight: progress.inFlight })}\n` +
                    `leaving runner's last output:\n${child.output().slice(-3000)}`
                )
              )
            )
          )
        )
      )
      assert.deepStrictEqual([final.done, final.succeeded], [2000, 2000])
      assert.deepStrictEqual(await stored(job), { rows: 2000, items: 2000 })
      const hits = hitsOf(job)
      assert.strictEqual(hits.length, 2000)
      assert.isTrue(hits.every((count) => count === 1))
      passed = true
    } finally {
      // The next tests need all three runners and no request of this job left running.
      if (!passed) await run(ClusterFanout.cancel(job)).catch(() => undefined)
      await leaving.start()
    }
  }, 80_000)

  it("hands an origin over when a runner joins mid-chunk: started items finish there, the rest move, never more than perHost", async () => {
    const job = "join"
    const joining = suite.cluster.runners[2]!
    await joining.child().stop("SIGTERM", 30_000)
    // 20 origins, one chunk each of 40 items, 2 at once, 1.5 s a request: 30 s a chunk, longer than
    // the 15 s Effect's cluster waits for an entity to end when its shard moves, and long enough
    // for a runner slow to start on a busy machine to join while every chunk still runs.
    const items = Array.from({ length: 800 }, (_, i) => `${suite.origins[i % 20]!.url}/${job}/${i}?delay=1500`)
    for (const origin of suite.origins) origin.resetPeak()
    await run(ClusterFanout.submit(job, items, { perHost: 2, chunkSize: 40 }))
    await waitUntil(async () => (await run(ClusterFanout.progress(job))).done >= 40, 30_000)
    const joinedAt = Date.now()
    await joining.start()
    const final = await run(ClusterFanout.wait(job, { interval: "200 millis", timeout: "60 seconds" }))
    assert.deepStrictEqual([final.done, final.succeeded], [800, 800])
    assert.deepStrictEqual(await stored(job), { rows: 800, items: 800 })
    assert.isTrue(hitsOf(job).every((count) => count === 1))
    assert.isAtMost(Math.max(...suite.origins.map((origin) => origin.peak())), 2)
    // The joining runner went on with chunks that others had started, once their started items ended.
    const [shared] = await run(
      Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql<{ chunks: string; at: Date | null }>`select count(distinct r.chunk) as chunks, min(r.created_at) as at
        from volley_results r where r.job_id = ${job} and r.runner = ${`127.0.0.1:${joining.port}`}
          and exists (select 1 from volley_results o where o.job_id = r.job_id and o.chunk = r.chunk and o.runner <> r.runner)`
      )
    )
    console.log(
      `join: ${shared!.chunks} started chunks moved to the new runner, its first outcome ` +
        `${shared!.at === null ? "never" : `${((shared!.at.getTime() - joinedAt) / 1000).toFixed(1)} s after it started`}`
    )
    assert.isAbove(Number(shared!.chunks), 0)
  }, 110_000)

  it("completes a job with one outcome per item across a PostgreSQL restart", async () => {
    const job = "pg-restart"
    await run(ClusterFanout.submit(job, urls(job, 2000, "?delay=50"), { perHost, chunkSize: 20 }))
    await waitUntil(async () => (await run(ClusterFanout.progress(job))).done >= 300, 30_000)
    const stoppedAt = Date.now()
    await suite.cluster.postgres.stop("fast")
    await new Promise((resolve) => setTimeout(resolve, 3000))
    await suite.cluster.postgres.start()
    const final = await run(ClusterFanout.wait(job, { interval: "200 millis", timeout: "60 seconds" }))
    console.log(`PostgreSQL down ~3 s: job done ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s after the stop`)
    assert.deepStrictEqual([final.done, final.succeeded], [2000, 2000])
    assert.deepStrictEqual(await stored(job), { rows: 2000, items: 2000 })
  }, 80_000)
})
