import * as Http from "@volley/core/Http"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpBody from "effect/http/HttpBody"
import type * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Semaphore from "effect/Semaphore"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import { maxStoredBytes, tooLargeReason } from "./json.ts"
import type { Chunk, WireRequest } from "./model.ts"
import type { Reader } from "./reader.ts"
import {
  durable,
  findJob,
  isConnectionError,
  isForeignKeyViolation,
  isResourceShortage,
  refusal,
  storable
} from "./store.ts"

/** What a runner needs to work chunks: its name, its bound on items at once, its readers. */
export class Worker extends Context.Service<
  Worker,
  {
    readonly runner: string
    readonly permits: Semaphore.Semaphore
    readonly readers: ReadonlyMap<string, Reader>
  }
>()("@volley/cluster/internal/Worker") {}

interface Outcome {
  readonly ok: boolean
  readonly status: number | null
  readonly bytes: number | null
  readonly value: string | null
  readonly errorTag: string | null
  readonly errorMessage: string | null
}

const toRequest = (wire: WireRequest): HttpClientRequest.HttpClientRequest => {
  const request = HttpClientRequest.make(wire.method as "GET")(wire.url, { headers: wire.headers })
  if (wire.body === null) return request
  // The item's own content type (the request's headers are lower-cased): setBody replaces the
  // header with the body's, which would otherwise be HttpBody's default.
  const contentType = request.headers["content-type"]
  return HttpClientRequest.setBody(
    request,
    wire.bodyEncoding === "base64"
      ? HttpBody.uint8Array(Buffer.from(wire.body, "base64"), contentType)
      : HttpBody.text(wire.body, contentType)
  )
}

const failure = (tag: string, message: string, status: number | null = null): Outcome => ({
  ok: false,
  status,
  bytes: null,
  value: null,
  errorTag: tag,
  errorMessage: message
})

// An item's failure, whatever a reader failed with: its tag and message are stored as text, so a
// value of another kind (a number, an object, one whose getters throw) is described rather than
// stored as it is, which failed the chunk's every write and replayed it for good.
const describe = (error: unknown): Outcome => {
  try {
    if (typeof error === "object" && error !== null && "_tag" in error) {
      const tagged = error as { readonly _tag: unknown; readonly message?: unknown; readonly reason?: unknown }
      const tag = textOf(tagged._tag, "Defect")
      if (tag === "HttpClientError" && typeof tagged.reason === "object" && tagged.reason !== null) {
        const reason = tagged.reason as { readonly _tag?: unknown; readonly response?: { readonly status?: unknown } }
        const status = reason.response?.status
        const reasonTag = textOf(reason._tag, tag)
        return failure(reasonTag, textOf(tagged.message, reasonTag), typeof status === "number" ? status : null)
      }
      return failure(tag, textOf(tagged.message, tag))
    }
    return failure("Defect", textOf(error, "a value that cannot be described"))
  } catch {
    return failure("Defect", "a value that cannot be described")
  }
}

const textOf = (u: unknown, fallback: string): string => {
  if (typeof u === "string") return u
  if (u === undefined) return fallback
  try {
    return u instanceof Error ? String(u.message) : typeof u === "symbol" ? u.toString() : String(u)
  } catch {
    return fallback
  }
}

/** Runs one request and reads it: bytes by default, or with the job's reader, encoded to JSON. */
const fetchOne = (
  wire: WireRequest,
  reader: Reader | undefined
): Effect.Effect<Outcome, never, HttpClient.HttpClient> => {
  const read = Http.send(toRequest(wire), (response) =>
    reader === undefined
      ? Effect.map(
          response.arrayBuffer,
          (body): Outcome => ({
            ok: true,
            status: response.status,
            bytes: body.byteLength,
            value: null,
            errorTag: null,
            errorMessage: null
          })
        )
      : Effect.flatMap(reader.read(response), (value) =>
          Effect.map(Schema.encodeUnknownEffect(Schema.toCodecJson(reader.success))(value), (encoded): Outcome => {
            const json: string | undefined = JSON.stringify(encoded)
            const bytes = json === undefined ? 0 : Buffer.byteLength(json)
            // Stored, a row PostgreSQL's client cannot read back failed every read of the job's results.
            return bytes > maxStoredBytes
              ? failure("ValueTooLarge", tooLargeReason("the reader's value", bytes), response.status)
              : {
                  ok: true,
                  status: response.status,
                  bytes: null,
                  value: json ?? null,
                  errorTag: null,
                  errorMessage: null
                }
          })
        )
  )
  return Effect.exit(read).pipe(
    Effect.map((exit) =>
      Exit.isSuccess(exit)
        ? exit.value
        : Cause.hasInterruptsOnly(exit.cause)
          ? failure("ItemInterrupted", "interrupted")
          : describe(Cause.squash(exit.cause))
    )
  )
}

/**
 * Writes an item's outcome; `false` when the chunk's job is gone (see {@link insert}). A statement
 * PostgreSQL refuses does not end the chunk: a refusal it marks as worth retrying (a deadlock, a
 * serialization failure, a lock or statement timeout), or a shortage of the server's (too many
 * connections, out of memory, disk full), is tried again a few times, then that one,
 * like any other (a constraint, a value it rejects), is recorded as the item's failure,
 * `OutcomeNotStored`, naming the refusal. Failing the chunk restarted the origin's entity, which
 * replayed the chunk for good (every ~10 s): the item was fetched again each time and the origin's
 * later chunks, of every job, waited behind it. A failure PostgreSQL refuses too (it refuses every
 * outcome), and connection errors (retried by `durable` for a minute), still fail the chunk:
 * nothing can be recorded, so the chunk is replayed until PostgreSQL takes outcomes again.
 */
const write = (
  chunk: Chunk,
  index: number,
  runner: string,
  outcome: Outcome
): Effect.Effect<boolean, SqlError.SqlError, SqlClient.SqlClient> =>
  insert(chunk, index, runner, outcome).pipe(
    Effect.retry({
      schedule: Schedule.spaced("200 millis"),
      times: 4,
      // A shortage (too many connections, out of memory) is the server's state too: recorded at once,
      // an item that ran well stayed a failure for good though the next statement would be stored.
      while: (error) => (error.isRetryable || isResourceShortage(error)) && !isConnectionError(error)
    }),
    Effect.catchIf(
      (error) => !isConnectionError(error),
      (error) =>
        insert(
          chunk,
          index,
          runner,
          failure("OutcomeNotStored", `PostgreSQL refused the item's outcome (${summary(outcome)}): ${refusal(error)}`)
        )
    )
  )

const summary = (outcome: Outcome): string => {
  const status = outcome.status === null ? "" : `status ${outcome.status}`
  return outcome.ok ? status || "ok" : `${outcome.errorTag}${status && ` (${status})`}: ${outcome.errorMessage}`
}

/**
 * Inserts an item's outcome; `false` when the chunk's job is gone: forgotten while the item ran,
 * perhaps submitted again under its id (another nonce), so the outcome has no job to go to. The
 * row is written only while the chunk's submission is the job's, in the same statement.
 */
const insert = (
  chunk: Chunk,
  index: number,
  runner: string,
  outcome: Outcome
): Effect.Effect<boolean, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    durable(sql<{ readonly live: string | number }>`with job as (
        select 1 from volley_jobs where job_id = ${chunk.job} and nonce = ${chunk.nonce}
      ), written as (
        insert into volley_results
          (job_id, item, chunk, origin, ok, status, bytes, value, error_tag, error_message, runner)
        select ${chunk.job}::text, ${index}::bigint, ${chunk.chunk}::integer, ${chunk.origin}::text,
          ${outcome.ok}::boolean, ${outcome.status}::integer, ${outcome.bytes}::bigint, ${outcome.value}::text,
          ${storable(outcome.errorTag)}::text, ${storable(outcome.errorMessage)}::text, ${runner}::text
        from job
        on conflict do nothing
      )
      select count(*) as live from job`).pipe(
      Effect.map((rows) => Number(rows[0]?.live ?? 0) > 0),
      // Deleted between the statement's snapshot and its insert.
      Effect.catchIf(isForeignKeyViolation, () => Effect.succeed(false))
    )
  )

/**
 * Marks when a chunk started (the first time) or finished, for `progress`; only while the
 * chunk's submission is the job's: a chunk of a forgotten submission that ends after the job
 * was submitted again under its id must not mark the new submission's chunk of that number.
 */
export const markChunk = (
  chunk: Pick<Chunk, "job" | "nonce" | "chunk">,
  mark: "started" | "finished"
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    durable(
      mark === "started"
        ? sql`update volley_chunks c set started_at = coalesce(c.started_at, now()) from volley_jobs j
            where c.job_id = ${chunk.job} and c.chunk = ${chunk.chunk} and j.job_id = c.job_id and j.nonce = ${chunk.nonce}`
        : sql`update volley_chunks c set finished_at = now() from volley_jobs j
            where c.job_id = ${chunk.job} and c.chunk = ${chunk.chunk} and j.job_id = c.job_id and j.nonce = ${chunk.nonce}`
    )
  )

// A job cancelled (or forgotten, perhaps submitted again: another nonce) while its chunk runs:
// checked before each item, read at most twice a second per chunk.
const cancelledCheck = (job: string, nonce: string) => {
  let checkedAt = 0
  let cancelled = false
  return Effect.suspend(() => {
    if (cancelled || Date.now() - checkedAt < 500) return Effect.succeed(cancelled)
    checkedAt = Date.now()
    return Effect.map(
      durable(findJob(job)),
      (row) => (cancelled = row === undefined || row.cancelled_at !== null || row.nonce !== nonce)
    )
  })
}

/**
 * Runs a chunk's items that have no outcome yet, `perHost` at a time, each under a permit of the
 * runner's bound. An item that has started finishes and writes its outcome even when the chunk is
 * interrupted (a graceful shutdown hands the shard over); items not started then stay for the
 * next owner, which skips those with outcomes. So SIGTERM runs nothing twice; SIGKILL re-runs at
 * most what was in flight. A job cancelled meanwhile ends the chunk (marked finished) without
 * starting its other items; a job forgotten meanwhile ends it quietly: its outcomes are dropped
 * and its other items not started.
 */
export const runChunk = (
  chunk: Chunk
): Effect.Effect<void, SqlError.SqlError, Worker | SqlClient.SqlClient | HttpClient.HttpClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const worker = yield* Worker
    const cancelled = cancelledCheck(chunk.job, chunk.nonce)
    // A cancelled job's chunk may have been started by a runner that stopped mid-chunk (a handover,
    // a crash) and is delivered again: it starts nothing, but ends its chunk, else `progress`
    // counted the items never run as in flight for good. A forgotten job's chunk marks nothing.
    if (yield* cancelled) return yield* markChunk(chunk, "finished")
    // Set when an outcome finds the job deleted (forgotten), sooner than the throttled check sees it.
    let gone = false
    const done = yield* durable(
      sql<{
        readonly item: string | number
      }>`select item from volley_results where job_id = ${chunk.job} and chunk = ${chunk.chunk}`
    )
    const skip = new Set(done.map((row) => Number(row.item)))
    yield* markChunk(chunk, "started")
    const reader = chunk.reader === null ? undefined : worker.readers.get(chunk.reader)
    const pending = chunk.items.filter((item) => !skip.has(item.index))
    yield* Effect.forEach(
      pending,
      (item) =>
        Effect.flatMap(cancelled, (stop) =>
          stop || gone
            ? Effect.void
            : worker.permits.withPermit(
                Effect.uninterruptible(
                  Effect.flatMap(
                    chunk.reader !== null && reader === undefined
                      ? Effect.succeed(
                          failure("ReaderNotFound", `no reader named ${chunk.reader} on runner ${worker.runner}`)
                        )
                      : fetchOne(item.request, reader),
                    (outcome) =>
                      Effect.map(write(chunk, item.index, worker.runner, outcome), (written) => {
                        if (!written) gone = true
                      })
                  )
                )
              )
        ),
      { concurrency: chunk.perHost, discard: true }
    )
    if (gone) return
    yield* markChunk(chunk, "finished")
    // The job is finished when every item of a fully submitted job has an outcome. Its outcomes are
    // counted only once none of its chunks is left unfinished (marked before this, by each runner):
    // the last chunk's end counts them, not every chunk's.
    yield* durable(sql`update volley_jobs set finished_at = now()
      where job_id = ${chunk.job} and finished_at is null and total is not null
        and not exists (select 1 from volley_chunks c
          where c.job_id = ${chunk.job} and c.finished_at is null and c.origin <> '')
        and total = (select count(*) from volley_results where job_id = ${chunk.job})`)
  })

/** A runner's worker: `concurrency` items at once on this runner, across every origin and job. */
export const makeWorker = (runner: string, concurrency: number, readers: ReadonlyArray<Reader>) =>
  Effect.map(Semaphore.make(concurrency), (permits) =>
    Worker.of({ runner, permits, readers: new Map(readers.map((reader) => [reader.name, reader])) })
  )
