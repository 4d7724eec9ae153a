import { ClusterFanout } from "@volley/cluster"
import { Cause, Duration, Effect, Exit, Result, Stream } from "effect"
import { assert, describe, it } from "vitest"
import { sweepFinished } from "../../src/internal/store.ts"
import type { Origin } from "../support/origins.ts"
import { clusterSuite } from "../support/suite.ts"

// What the store's `durable` retries (PostgreSQL out of reach) and what it does not (a statement
// the server refused), seen from ClusterFanout. The PostgreSQL restarts come last in the file.
const suite = clusterSuite({ runners: 1 }, { count: 2, delayMillis: 5 })
const { run } = suite
const hits = (origin: Origin, prefix: string) =>
  [...origin.hits].filter(([path]) => path.startsWith(prefix)).reduce((sum, [, count]) => sum + count, 0)
const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

describe("store", () => {
  describe("sweepFinished", () => {
    it("keeps finished jobs for good with a retention longer than PostgreSQL's timestamps, and says nothing", async () => {
      await run(ClusterFanout.submit("kept", [`${suite.origins[0]!.url}/kept/0`]))
      await run(ClusterFanout.wait("kept", { interval: "100 millis", timeout: "15 seconds" }))
      // Before: the statement failed at every sweep ("interval out of range" for Infinity,
      // "timestamp out of range" for 10,000 years), unseen.
      for (const retention of [Duration.infinity, Duration.days(3_652_500)]) {
        const exit = await run(Effect.exit(sweepFinished(retention)))
        assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause).slice(0, 400) : "")
      }
      await run(sweepFinished(Duration.days(365 * 1000)))
      assert.strictEqual((await run(ClusterFanout.progress("kept"))).done, 1)
      await run(sweepFinished(Duration.zero))
      const gone = await run(Effect.exit(ClusterFanout.progress("kept")))
      assert.isTrue(Exit.isFailure(gone) && Cause.pretty(gone.cause).includes("JobNotFoundError"))
    }, 40_000)
  })

  describe("durable", () => {
    it("forgetting a running job frees its origin at once for the next job, quietly", async () => {
      const origin = suite.origins[1]!
      const runner = suite.cluster.runners[0]!.child()
      const logged = runner.output().length
      const urls = Array.from({ length: 40 }, (_, i) => `${origin.url}/busy/${i}?delay=400`)
      await run(ClusterFanout.submit("busy", urls, { perHost: 4, chunkSize: 40 }))
      for (let i = 0; i < 100 && (await run(ClusterFanout.progress("busy"))).done < 4; i++) await sleep(100)
      await run(ClusterFanout.forget("busy"))
      await run(ClusterFanout.submit("next", [`${origin.url}/next/0`]))
      // The items in flight at `forget` cannot write their outcomes (the job row is gone: foreign
      // key). Retried as if PostgreSQL were away, they held the origin's one slot for ~60 s.
      const next = await run(Effect.exit(ClusterFanout.wait("next", { interval: "100 millis", timeout: "15 seconds" })))
      assert.isTrue(Exit.isSuccess(next), Exit.isFailure(next) ? Cause.pretty(next.cause).slice(0, 400) : "")
      assert.isBelow(hits(origin, "/busy/"), 40, "the forgotten job's remaining items were not started")
      // Nowhere to write is the job's end, not the runner's error: no entity restarted on a defect.
      assert.notInclude(runner.output().slice(logged), "Defect in entity")
    }, 60_000)

    it("an item with a NUL character fails as InvalidItem at once, its detail escaped", async () => {
      const exit = await run(
        Effect.exit(
          ClusterFanout.submit("nul", ["bad\u0000url", `${suite.origins[0]!.url}/nul/1`]).pipe(
            Effect.timeout("10 seconds")
          )
        )
      )
      // PostgreSQL's text refuses U+0000: the InvalidItem row failed, and was retried for ~60 s.
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause).slice(0, 400) : "")
      const final = await run(ClusterFanout.wait("nul", { interval: "100 millis", timeout: "15 seconds" }))
      assert.deepStrictEqual([final.succeeded, final.failed], [1, 1])
      const [invalid] = await run(Stream.runCollect(ClusterFanout.results("nul")))
      const failure = Result.isFailure(invalid!.result) ? invalid!.result.failure : undefined
      assert.deepStrictEqual([failure?.reason, failure?.detail], ["InvalidItem", "not an http(s) URL: bad\\u0000url"])
    }, 40_000)

    it("wait outlives a PostgreSQL restart of a few seconds, as the runners do", async () => {
      const urls = Array.from({ length: 12 }, (_, i) => `${suite.origins[0]!.url}/blip/${i}?delay=1000`)
      await run(ClusterFanout.submit("blip", urls, { perHost: 1 }))
      const waiting = run(Effect.exit(ClusterFanout.wait("blip", { interval: "200 millis", timeout: "60 seconds" })))
      await sleep(1500)
      await suite.cluster.postgres.stop("fast")
      await sleep(3000)
      await suite.cluster.postgres.start()
      // Each poll read progress once: the first one while the server was down failed the wait.
      const exit = await waiting
      if (Exit.isFailure(exit)) assert.fail(Cause.pretty(exit.cause).slice(0, 400))
      assert.strictEqual(exit.value.succeeded, 12)
    }, 120_000)

    it("wait keeps to its timeout while PostgreSQL is away", async () => {
      await run(ClusterFanout.submit("away", [`${suite.origins[0]!.url}/away/0?delay=10000`]))
      await suite.cluster.postgres.stop("fast")
      try {
        const started = Date.now()
        const exit = await run(
          Effect.exit(ClusterFanout.wait("away", { interval: "200 millis", timeout: "2 seconds" }))
        )
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        // Retried on connection errors (not failed with SqlError), and not past the caller's timeout.
        assert.isTrue(Cause.isTimeoutError(error), Exit.isFailure(exit) ? Cause.pretty(exit.cause).slice(0, 400) : "")
        assert.isBelow(Date.now() - started, 5000)
      } finally {
        await suite.cluster.postgres.start()
      }
    }, 60_000)
  })
})
