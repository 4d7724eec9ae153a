import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as SqlClient from "effect/sql/SqlClient"
import * as SqlError from "effect/sql/SqlError"

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
      finished_at timestamptz,
      nonce text not null default gen_random_uuid()::text,
      hash text,
      bounded boolean
    )`
      // A submission's nonce makes its chunks' message keys new after a forget (Effect's cluster keeps
      // processed keys); hash is over all the job's items. Added to tables made before they existed.
      yield* sql`alter table volley_jobs add column if not exists nonce text not null default gen_random_uuid()::text`
      yield* sql`alter table volley_jobs add column if not exists hash text`
      // True for a job made by a version that sends chunks not yet full past a limit (see
      // ./submit.ts); null for one made before, whose chunks a resubmission must still match.
      yield* sql`alter table volley_jobs add column if not exists bounded boolean`
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
      // A chunk's outcomes (read when it starts, counted for `progress`'s in flight) and a job's chunks
      // not yet finished (before its outcomes are counted at a chunk's end), found without reading
      // every outcome of the job: per chunk, that cost O(items), quadratic in a job's size (a job of a
      // million items read ~200 ms of rows at each of its 10,000 chunks' starts and ends).
      yield* sql`create index if not exists volley_results_chunk on volley_results (job_id, chunk)`
      yield* sql`create index if not exists volley_chunks_unfinished on volley_chunks (job_id)
        where finished_at is null and origin <> ''`
    })
  )
})

/** The SQLSTATE PostgreSQL answered with (sql-pg keeps the server's fields on the reason's cause). */
// ~3,170 years: `now()` less much more than that falls before PostgreSQL's first timestamp (4713 BC).
const MAX_RETENTION_SECONDS = 1e11

/**
 * Deletes the jobs that finished more than `retention` ago (their chunks and outcomes go with
 * them). A retention longer than PostgreSQL's timestamps reach back (`Infinity`, or thousands of
 * years) keeps them for good without asking: the statement failed at every sweep ("interval out
 * of range", "timestamp out of range").
 */
export const sweepFinished = (
  retention: Duration.Duration
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> => {
  const seconds = Duration.toSeconds(retention)
  if (!(seconds < MAX_RETENTION_SECONDS)) return Effect.void
  return Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.asVoid(sql`delete from volley_jobs where finished_at < now() - make_interval(secs => ${seconds})`)
  )
}

const sqlState = (error: SqlError.SqlError): string | undefined => {
  const cause = error.reason.cause
  return Predicate.hasProperty(cause, "code") && typeof cause.code === "string" ? cause.code : undefined
}

/**
 * PostgreSQL is out of reach: no connection, a connection lost, or a server shutting down or starting
 * up (a restart). sql-pg classifies 57P01-57P03 (admin_shutdown, crash_shutdown, cannot_connect_now)
 * as `UnknownError`, so they are matched by code. Anything else is a statement the server refused,
 * which fails the same way when sent again.
 */
export const isConnectionError = (error: unknown): error is SqlError.SqlError => {
  if (!SqlError.isSqlError(error)) return false
  if (error.reason._tag === "ConnectionError") return true
  const code = sqlState(error)
  return code !== undefined && (code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03")
}

/** A foreign key refused the row: for `volley_results` and `volley_chunks`, the job was forgotten (deleted). */
export const isForeignKeyViolation = (error: SqlError.SqlError): boolean =>
  error.reason._tag === "ConstraintError" && sqlState(error) === "23503"

/**
 * PostgreSQL is short of a resource (SQLSTATE class 53: disk full, out of memory, too many
 * connections): a state of the server, which may pass, not something wrong with the statement.
 * sql-pg classifies these as `UnknownError`, not retryable.
 */
export const isResourceShortage = (error: SqlError.SqlError): boolean => sqlState(error)?.startsWith("53") === true

/**
 * What PostgreSQL said when it refused a statement: its SQLSTATE and message (sql-pg's own message
 * is only "Query failed"; the server's is on the reason's cause).
 */
export const refusal = (error: SqlError.SqlError): string => {
  const code = sqlState(error)
  const cause = error.reason.cause
  const message =
    Predicate.hasProperty(cause, "message") && typeof cause.message === "string" && cause.message !== ""
      ? cause.message
      : error.message
  return `${code === undefined ? "" : `SQLSTATE ${code}: `}${message}`
}

/**
 * Retries a statement while PostgreSQL is away (a restart takes seconds), for up to about a minute.
 * Only connection errors are retried: a statement the server refused (a constraint, bad text) fails
 * at once, since callers may hold a runner's permit, uninterruptibly, around it.
 */
export const durable = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(effect, { schedule: Schedule.spaced("500 millis"), times: 120, while: isConnectionError })

/**
 * The longest message or detail stored (in UTF-16 units, so at most 192 KiB as UTF-8). A failure's
 * message may quote anything (an invalid item's reason quotes its whole text, a reader's error
 * may hold a body): stored whole, one over 16 MiB made a row PostgreSQL's client cannot read back,
 * and every read of the job's results failed.
 */
const maxStoredText = 64 * 1024

/**
 * Text as volley stores it: PostgreSQL's `text` cannot hold U+0000 (it refuses the whole statement),
 * so each one is written as the six characters `\u0000`; and at most {@link maxStoredText}
 * characters of it. For messages and details, not for keys.
 */
export const storable = (text: string | null): string | null => {
  if (text === null) return null
  const escaped = text.replaceAll("\u0000", "\\u0000")
  return escaped.length <= maxStoredText
    ? escaped
    : `${escaped.slice(0, maxStoredText)}... (${escaped.length - maxStoredText} more characters not stored)`
}

export interface JobRow {
  readonly per_host: number
  readonly reader: string | null
  readonly chunk_size: number
  readonly total: string | number | null
  readonly cancelled_at: Date | null
  readonly finished_at: Date | null
  /** The submission's (see `RunChunk` in ./model.ts): a chunk with another one is a forgotten job's. */
  readonly nonce: string
  /** Over all the job's items, once submitted in full (see ./submit.ts). */
  readonly hash: string | null
}

export const findJob = (job: string): Effect.Effect<JobRow | undefined, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<JobRow>`select per_host, reader, chunk_size, total, cancelled_at, finished_at, nonce, hash from volley_jobs where job_id = ${job}`,
      (rows) => rows[0]
    )
  )

/**
 * What claiming a chunk found: the hash stored under its number (`undefined` when the job was
 * completed without that chunk), or that the submission's job is gone (forgotten, perhaps
 * submitted again under its id: another nonce).
 */
export type Claim = { readonly _tag: "Stored"; readonly hash: string | undefined } | { readonly _tag: "Forgotten" }

/**
 * Stores a chunk of a job still being submitted (no total yet) under its number, unless that is
 * taken, and says what is stored under it. Only the submission's own job is written or read: the
 * job row must still hold `nonce`. That row is locked `FOR SHARE`, which waits for (and is waited
 * for by) the update that records a job's total (see ./submit.ts) and `forget`'s delete: a chunk is
 * stored either before a submission completes the job, which then sees it, or not at all.
 */
export const claimChunk = (
  job: string,
  nonce: string,
  chunk: { readonly chunk: number; readonly origin: string; readonly size: number },
  hash: string
): Effect.Effect<Claim, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const [inserted] = yield* durable(sql<{
      hash: string
    }>`insert into volley_chunks (job_id, chunk, origin, size, hash)
      select job_id, ${chunk.chunk}, ${chunk.origin}, ${chunk.size}, ${hash}
      from volley_jobs where job_id = ${job} and nonce = ${nonce} and total is null for share
      on conflict do nothing returning hash`)
    if (inserted !== undefined) return { _tag: "Stored", hash: inserted.hash }
    // A statement of its own: it sees a chunk another submission stored since the insert began.
    const [stored] = yield* durable(sql<{ hash: string | null }>`select c.hash from volley_jobs j
      left join volley_chunks c on c.job_id = j.job_id and c.chunk = ${chunk.chunk}
      where j.job_id = ${job} and j.nonce = ${nonce}`)
    return stored === undefined ? { _tag: "Forgotten" } : { _tag: "Stored", hash: stored.hash ?? undefined }
  })
