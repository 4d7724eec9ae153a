import * as Path from "node:path"
import { ClusterRunner } from "@volley/cluster"
import { Effect, ManagedRuntime, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { freePort } from "./ports.ts"
import { type Postgres, startPostgres } from "./postgres.ts"
import { type Child, spawnNode } from "./processes.ts"

const runnerEntry = Path.join(import.meta.dirname, "..", "fixtures", "runner.ts")

/** A runner process of a test cluster, restartable on its port. */
export interface Runner {
  readonly port: number
  readonly child: () => Child
  readonly start: () => Promise<void>
}

/** PostgreSQL, `runners` runner processes and a client runtime in this process. */
export interface TestCluster {
  readonly postgres: Postgres
  readonly url: string
  readonly runners: ReadonlyArray<Runner>
  readonly client: ManagedRuntime.ManagedRuntime<ClusterRunner.ClusterRunnerServices, ClusterRunner.ClusterStartError>
  readonly dispose: () => Promise<void>
}

/**
 * Waits until every runner holds its share of the 300 shards (advisory locks, told apart by the
 * connection's application name): a runner that has just joined takes its shards over a few seconds.
 */
export const balanced = (runners: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const share = Math.floor(300 / runners)
    yield* Effect.repeat(
      sql<{ name: string; shards: string }>`select a.application_name as name, count(*) as shards
        from pg_locks l join pg_stat_activity a on a.pid = l.pid
        where l.locktype = 'advisory' and a.application_name like 'volley-runner %' group by 1`,
      {
        until: (rows) => rows.length === runners && rows.every((row) => Number(row.shards) >= share - 1),
        schedule: Schedule.spaced("200 millis")
      }
    ).pipe(Effect.timeout("30 seconds"))
  })

/**
 * When another runner first wrote an outcome in a chunk that `runner` (its `host:port`) had
 * started: the moment the victim's work was taken over. `undefined` if it never was.
 */
export const firstTakeover = (job: string, runner: string) =>
  Effect.map(
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        sql<{ at: Date | null }>`select min(r.created_at) as at from volley_results r
          where r.job_id = ${job} and r.runner <> ${runner} and exists (select 1 from volley_results v
            where v.job_id = r.job_id and v.chunk = r.chunk and v.runner = ${runner})`
    ),
    ([row]) => row?.at ?? undefined
  )

export const startCluster = async (options: {
  readonly runners: number
  readonly concurrency?: number
  /** Environment of the runner processes (see fixtures/runner.ts). */
  readonly env?: Record<string, string>
}): Promise<TestCluster> => {
  const postgres = await startPostgres()
  const children: Array<Child> = []
  try {
    const url = await postgres.createDatabase("volley")
    const runners = await Promise.all(
      Array.from({ length: options.runners }, async (): Promise<Runner> => {
        const port = await freePort()
        let child: Child | undefined
        const runner: Runner = {
          port,
          child: () => child!,
          start: async () => {
            child = spawnNode(runnerEntry, [String(port), url, String(options.concurrency ?? 64)], options.env)
            children.push(child)
            await child.waitFor(`runner ready ${port}`, 60_000)
          }
        }
        return runner
      })
    )
    // One at a time: the first creates the tables while the others would wait on its lock anyway.
    for (const runner of runners) await runner.start()
    const client = ManagedRuntime.make(ClusterRunner.layerClient({ database: { url }, timings: "fast" }))
    await client.runPromise(balanced(runners.length))
    return {
      postgres,
      url,
      runners,
      client,
      dispose: async () => {
        await client.dispose().catch(() => undefined)
        await Promise.all(children.map((child) => child.stop("SIGTERM", 10_000)))
        await postgres.dispose()
      }
    }
  } catch (error) {
    await Promise.all(children.map((child) => child.stop("SIGKILL")))
    await postgres.dispose()
    throw error
  }
}
