import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"

// volley's own tables, next to effect's `cluster_*` ones. A job row, one row per chunk (its hash detects a
// job id reused with other items; its start/finish gives "in flight"), one row per item outcome.
export const migrate: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  // Two processes starting at once may both try to create the tables: serialise on an advisory lock.
  yield* sql.withTransaction(
    Effect.gen(function* () {
      yield* sql`select pg_advisory_xact_lock(7015001)`
      yield* sql`create table if not exists volley_jobs (
      job_id text primary key,
      per_host integer not null,
      reader text,
      chunk_size integer not null,
      total bigint,
      created_at timestamptz not null default now(),
      cancelled_at timestamptz,
      finished_at timestamptz
    )`
      yield* sql`create table if not exists volley_chunks (
      job_id text not null references volley_jobs (job_id) on delete cascade,
      chunk integer not null,
      origin text not null,
      size integer not null,
      hash text not null,
      started_at timestamptz,
      finished_at timestamptz,
      primary key (job_id, chunk)
    )`
      yield* sql`create table if not exists volley_results (
      job_id text not null references volley_jobs (job_id) on delete cascade,
      item bigint not null,
      chunk integer not null,
      origin text not null,
      ok boolean not null,
      status integer,
      bytes bigint,
      value text,
      error_tag text,
      error_message text,
      runner text not null,
      created_at timestamptz not null default now(),
      primary key (job_id, item)
    )`
    })
  )
})

/** Retries a statement while PostgreSQL is away (a restart takes seconds), for up to about a minute. */
export const durable = <A, R>(effect: Effect.Effect<A, SqlError.SqlError, R>): Effect.Effect<A, SqlError.SqlError, R> =>
  Effect.retry(effect, { schedule: Schedule.spaced("500 millis"), times: 120 })

export interface JobRow {
  readonly per_host: number
  readonly reader: string | null
  readonly chunk_size: number
  readonly total: string | number | null
  readonly cancelled_at: Date | null
  readonly finished_at: Date | null
}

export const findJob = (job: string): Effect.Effect<JobRow | undefined, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<JobRow>`select per_host, reader, chunk_size, total, cancelled_at, finished_at from volley_jobs where job_id = ${job}`,
      (rows) => rows[0]
    )
  )
