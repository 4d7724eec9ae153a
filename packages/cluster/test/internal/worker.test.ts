import { ClusterFanout } from "@volley/cluster"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { assert, describe, it } from "vitest"
import { markChunk } from "../../src/internal/worker.ts"
import { clusterSuite } from "../support/suite.ts"

// What a runner writes for a chunk besides its items' outcomes.
const suite = clusterSuite({ runners: 1 }, { count: 1, delayMillis: 5 })
const { run } = suite
const query = <A extends object>(text: string) => run(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text)))

describe("internal/worker", () => {
  it("marks a chunk's start and end only for the job's current submission", async () => {
    await run(ClusterFanout.submit("marks", [`${suite.origins[0]!.url}/marks/0`]))
    await run(ClusterFanout.wait("marks", { interval: "100 millis", timeout: "20 seconds" }))
    const [job] = await query<{ nonce: string }>("select nonce from volley_jobs where job_id = 'marks'")
    const [{ chunk }] = (await query<{ chunk: number }>("select chunk from volley_chunks where job_id = 'marks'")) as [
      { chunk: number }
    ]
    await query("update volley_chunks set started_at = null, finished_at = null where job_id = 'marks'")
    const marks = async () =>
      (
        await query<{ started: boolean; finished: boolean }>(
          "select started_at is not null as started, finished_at is not null as finished from volley_chunks where job_id = 'marks'"
        )
      )[0]
    // A chunk of an earlier submission of the job (forgotten, then submitted again under its
    // id) that starts or ends late: the current submission's chunk of that number stays as it is.
    const stale = { job: "marks", nonce: `${job!.nonce}-forgotten`, chunk }
    await run(markChunk(stale, "started"))
    await run(markChunk(stale, "finished"))
    assert.deepStrictEqual(await marks(), { started: false, finished: false })
    const current = { job: "marks", nonce: job!.nonce, chunk }
    await run(markChunk(current, "started"))
    assert.deepStrictEqual(await marks(), { started: true, finished: false })
    await run(markChunk(current, "finished"))
    assert.deepStrictEqual(await marks(), { started: true, finished: true })
  }, 60_000)
})
