// More origins than a runner keeps resident: Effect's cluster admits a new origin's entity only
// when a finished one has idled out, so the job goes on in waves of `maxResidentEntities`.
import { ClusterFanout } from "@volley/cluster"
import { assert, describe, it } from "vitest"
import { clusterSuite } from "../../packages/cluster/test/support/suite.ts"

const suite = clusterSuite({ runners: 1, env: { VOLLEY_MAX_RESIDENT: "4" } }, { count: 12, delayMillis: 10 })

describe("ClusterFanout past a runner's resident origins", () => {
  it("finishes a job over 12 origins on a runner that keeps 4 resident, each taking its place in seconds", async () => {
    const { origins, run } = suite
    const urls = Array.from({ length: 48 }, (_, i) => `${origins[i % 12]!.url}/resident/${i}`)
    const started = Date.now()
    await run(ClusterFanout.submit("resident", urls, { perHost: 2 }))
    // Three waves of 4 origins; each wave waits for the last one's origins to idle out (5 s idle,
    // seen by a reaper that looks every 5 s): ~20 s. With a minute's idle time it did not end within 60 s.
    const final = await run(ClusterFanout.wait("resident", { interval: "200 millis", timeout: "60 seconds" }))
    console.log(`12 origins, 4 resident at once: ${((Date.now() - started) / 1000).toFixed(1)} s`)
    assert.deepStrictEqual([final.done, final.succeeded], [48, 48])
    assert.isTrue(origins.every((origin) => origin.hits.size === 4))
  }, 80_000)
})
