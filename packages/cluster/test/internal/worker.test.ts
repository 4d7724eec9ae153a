import { ClusterFanout } from "@volley/cluster"
import { NodeHttpClient } from "@volley/node"
import { Effect, Fiber, Result, Schedule, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { assert, describe, it } from "vitest"
import type { Chunk } from "../../src/internal/model.ts"
import { makeWorker, markChunk, runChunk, Worker } from "../../src/internal/worker.ts"
import type { Origin } from "../support/origins.ts"
import { clusterSuite } from "../support/suite.ts"

// What a runner writes for a chunk besides its items' outcomes.
const suite = clusterSuite({ runners: 1 }, { count: 1, delayMillis: 5 })
const { run } = suite
const query = <A extends object>(text: string) => run(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe<A>(text)))
const hits = (origin: Origin, prefix: string) =>
  [...origin.hits].filter(([path]) => path.startsWith(prefix)).reduce((sum, [, count]) => sum + count, 0)

// Runs a chunk in this process, as the runner that owns its origin would.
const runHere = (chunk: Chunk) =>
  runChunk(chunk).pipe(
    Effect.provideServiceEffect(Worker, makeWorker("test", 4, [])),
    Effect.provide(NodeHttpClient.layer())
  )

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

  it("a cancelled job's chunk that was started and handed over counts nothing in flight once delivered again", async () => {
    const origin = suite.origins[0]!
    // A job stored as submit stores it, but never sent to the runners: this test is its runners.
    const [job] = await query<{ nonce: string }>(
      "insert into volley_jobs (job_id, per_host, chunk_size, total, hash) values ('handover', 1, 3, 3, 'h') returning nonce"
    )
    await query(
      `insert into volley_chunks (job_id, chunk, origin, size, hash) values ('handover', 0, '${origin.url}', 3, 'h')`
    )
    const chunk: Chunk = {
      job: "handover",
      nonce: job!.nonce,
      chunk: 0,
      origin: origin.url,
      perHost: 1,
      reader: null,
      items: [0, 1, 2].map((index) => ({
        index,
        request: { method: "GET", url: `${origin.url}/handover/${index}?delay=1000`, headers: {}, body: null }
      }))
    }
    await run(
      Effect.gen(function* () {
        // The origin's shard moves while the chunk's first item runs: the chunk is interrupted, the
        // item finishes and writes its outcome, the other two are left for the next owner.
        const first = yield* Effect.forkChild(runHere(chunk))
        yield* Effect.sync(() => hits(origin, "/handover/")).pipe(
          Effect.repeat({ until: (n) => n > 0, schedule: Schedule.spaced("20 millis") }),
          Effect.timeout("10 seconds")
        )
        yield* Fiber.interrupt(first)
      })
    )
    const handedOver = await run(ClusterFanout.progress("handover"))
    assert.deepStrictEqual([handedOver.done, handedOver.inFlight], [1, 2])
    assert.isTrue(await run(ClusterFanout.cancel("handover")))
    // The next owner gets the chunk again, after the cancel.
    await run(runHere(chunk))
    const final = await run(ClusterFanout.progress("handover"))
    assert.deepStrictEqual(
      [final.cancelled, final.finished, final.done, final.inFlight, final.origins[0]?.inFlight],
      [true, true, 1, 0, 0]
    )
    assert.strictEqual(hits(origin, "/handover/"), 1, "the cancelled job's other items were not started")
  }, 60_000)

  // Found by review: a chunk read every outcome of its job, twice: at its start (its own, found by
  // the job's rows, with no index on the chunk) and at its end (all of them counted, to see if the
  // job was finished). So each chunk cost O(items), a job O(items x chunks): ~200 ms of rows at each
  // of the 10,000 chunks of a million-item job; `progress` likewise for each chunk in flight.
  it("reads only its own chunk's outcomes, not every one of its job's, until the job's last chunk", async () => {
    const origin = suite.origins[0]!
    const [job] = await query<{ nonce: string }>(
      "insert into volley_jobs (job_id, per_host, chunk_size, total, hash) values ('wide', 1, 20000, 20002, 'h') returning nonce"
    )
    // Chunk 0 ran (20,000 outcomes), chunk 1 runs here, chunk 2 has not run yet.
    await query(`insert into volley_chunks (job_id, chunk, origin, size, hash, started_at, finished_at)
      values ('wide', 0, '${origin.url}', 20000, 'h', now(), now()), ('wide', 1, '${origin.url}', 1, 'h', null, null),
        ('wide', 2, '${origin.url}', 1, 'h', null, null)`)
    await query(`insert into volley_results (job_id, item, chunk, origin, ok, status, bytes, runner)
      select 'wide', i, 0, '${origin.url}', true, 200, 2, 'test' from generate_series(0, 19999) as i`)
    const chunk: Chunk = {
      job: "wide",
      nonce: job!.nonce,
      chunk: 1,
      origin: origin.url,
      perHost: 1,
      reader: null,
      items: [{ index: 20000, request: { method: "GET", url: `${origin.url}/wide/20000`, headers: {}, body: null } }]
    }
    // In one transaction, whose own counts PostgreSQL keeps: rows read from volley_results and its indexes.
    const read = await run(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql.withTransaction(
          Effect.andThen(
            runHere(chunk),
            sql<{ n: string }>`select sum(pg_stat_get_xact_tuples_returned(oid)) as n from pg_class
              where oid = 'volley_results'::regclass
                or oid in (select indexrelid from pg_index where indrelid = 'volley_results'::regclass)`
          )
        )
      )
    )
    assert.isBelow(Number(read[0]!.n), 100)
    const progress = await run(ClusterFanout.progress("wide"))
    assert.deepStrictEqual([progress.done, progress.inFlight, progress.finished], [20001, 0, false])
  }, 60_000)

  describe("an outcome PostgreSQL refuses", () => {
    it("is recorded as the item's failure, OutcomeNotStored, naming the refusal: the item is fetched once", async () => {
      const origin = suite.origins[0]!
      const runner = suite.cluster.runners[0]!.child()
      const logged = runner.output().length
      // A real refusal from PostgreSQL (SQLSTATE 23514), for this job's 418s only.
      await query(
        "alter table volley_results add constraint no_teapot check (job_id <> 'refused' or status is distinct from 418)"
      )
      try {
        await run(ClusterFanout.submit("refused", [`${origin.url}/refused/0?status=418`, `${origin.url}/refused/1`]))
        const final = await run(ClusterFanout.wait("refused", { interval: "100 millis", timeout: "20 seconds" }))
        assert.deepStrictEqual([final.succeeded, final.failed, final.inFlight], [1, 1, 0])
        const [refused] = await run(Stream.runCollect(ClusterFanout.results("refused")))
        const failure = Result.isFailure(refused!.result) ? refused!.result.failure : undefined
        assert.strictEqual(failure?.reason, "OutcomeNotStored")
        assert.include(failure?.detail, "status 418")
        assert.include(failure?.detail, "SQLSTATE 23514")
        assert.include(failure?.detail, "no_teapot")
        // Failing the chunk restarted the origin's entity, which replayed the chunk every few
        // seconds for good: the item fetched again each time, the job never finished.
        assert.strictEqual(hits(origin, "/refused/0"), 1)
        assert.notInclude(runner.output().slice(logged), "Defect in entity")
      } finally {
        await query("alter table volley_results drop constraint if exists no_teapot")
      }
    }, 60_000)

    it("is written again when PostgreSQL is short of a resource for a moment (too many connections)", async () => {
      const origin = suite.origins[0]!
      // The server's state, not the outcome's: a connection taken a moment later (another client
      // gone) stores it. sql-pg classifies class 53 as UnknownError, not retryable.
      await query("create sequence busy_refusals")
      await query(`create function busy_refusal() returns trigger language plpgsql as $$
        begin
          if new.job_id = 'busy' and nextval('busy_refusals') <= 1 then
            raise exception 'sorry, too many clients already (test)' using errcode = 'too_many_connections';
          end if;
          return new;
        end $$`)
      await query(
        "create trigger busy_refusal before insert on volley_results for each row execute function busy_refusal()"
      )
      try {
        await run(ClusterFanout.submit("busy", [`${origin.url}/busy/0`]))
        const final = await run(ClusterFanout.wait("busy", { interval: "100 millis", timeout: "20 seconds" }))
        const [busy] = await run(Stream.runCollect(ClusterFanout.results("busy")))
        assert.deepStrictEqual(
          [final.succeeded, final.failed],
          [1, 0],
          Result.isFailure(busy!.result) ? busy!.result.failure.detail : "stored"
        )
        assert.strictEqual(hits(origin, "/busy/0"), 1)
      } finally {
        await query("drop trigger if exists busy_refusal on volley_results")
        await query("drop function if exists busy_refusal()")
        await query("drop sequence if exists busy_refusals")
      }
    }, 60_000)

    it("is written again when PostgreSQL marks the refusal as passing (a serialization failure)", async () => {
      const origin = suite.origins[0]!
      const runner = suite.cluster.runners[0]!.child()
      const logged = runner.output().length
      // The first two outcomes of this job are refused with SQLSTATE 40001, as under serializable isolation.
      await query("create sequence flaky_refusals")
      await query(`create function flaky_refusal() returns trigger language plpgsql as $$
        begin
          if new.job_id = 'flaky' and nextval('flaky_refusals') <= 2 then
            raise exception 'could not serialize access (test)' using errcode = 'serialization_failure';
          end if;
          return new;
        end $$`)
      await query(
        "create trigger flaky_refusal before insert on volley_results for each row execute function flaky_refusal()"
      )
      try {
        await run(ClusterFanout.submit("flaky", [`${origin.url}/flaky/0`]))
        const final = await run(ClusterFanout.wait("flaky", { interval: "100 millis", timeout: "20 seconds" }))
        assert.deepStrictEqual([final.succeeded, final.failed], [1, 0])
        const [flaky] = await query<{ n: string }>("select nextval('flaky_refusals') as n")
        assert.strictEqual(Number(flaky!.n), 4, "two refusals, one write, this read")
        assert.strictEqual(hits(origin, "/flaky/0"), 1)
        assert.notInclude(runner.output().slice(logged), "Defect in entity")
      } finally {
        await query("drop trigger if exists flaky_refusal on volley_results")
        await query("drop function if exists flaky_refusal()")
        await query("drop sequence if exists flaky_refusals")
      }
    }, 60_000)
  })
})
