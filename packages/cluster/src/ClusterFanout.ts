/**
 * Durable fan-out over a cluster of runners: a job of many HTTP requests is submitted once, stored
 * in PostgreSQL, and worked by every runner, with the per-host bound holding cluster-wide.
 *
 * - **Chunks**: items are grouped per origin and sent in chunks of `chunkSize` (one persisted
 *   message each), so a job of a million URLs is thousands of messages, not a million.
 * - **Per host, cluster-wide**: each origin is one entity; the runner holding its shard runs its
 *   chunks one at a time and their items `perHost` at a time, under the runner's own
 *   `concurrency` bound. So no origin ever sees more than `perHost` requests at once from the
 *   whole cluster (while a dead runner's shards move, its connections are already closed). The
 *   one exception is Effect's shard lease: a runner that stalls past `shardLockExpiration` (its
 *   lock session idles out, or it logs "Shard lock storage is unhealthy") loses its shards while
 *   the requests it already sent still run, so another runner may start that origin's chunk
 *   beside them for as long as they last.
 * - **Handover**: when an origin's shard moves (a runner joins or stops with SIGTERM), its running
 *   chunk stops starting items at once; the items already started finish and write their outcomes
 *   on the old runner, and the new owner goes on with the rest.
 * - **Outcomes**: each item's outcome (status and body size, or the value of a runner's
 *   {@link Reader}, or a typed failure) is written once to `volley_results`, keyed by job and
 *   item (`ON CONFLICT DO NOTHING`): delivery is at-least-once, the outcome is one. An outcome
 *   PostgreSQL refuses is recorded as the item's failure, `OutcomeNotStored` (see {@link ItemFailed}),
 *   rather than running the chunk again.
 * - **Runner's layers**: retries, timeouts, the deadline per request, proxies and the connection
 *   pool are whatever `HttpClient` and `Retry.RetryPolicy` the runner provides, as with `Fanout`
 *   in one process.
 * - **Watching**: {@link progress}, {@link watch}, {@link wait}, {@link results} as a stream,
 *   {@link cancel}, and {@link forget} (runners also forget finished jobs after their `retention`).
 *
 * Every function needs a cluster member: `ClusterRunner.layerClient` or `ClusterRunner.layer`.
 *
 * @since 0.1.0
 */
import { Options as Validate } from "@volley/core"
import type * as Cause from "effect/Cause"
import type * as ClusterError from "effect/cluster/ClusterError"
import type * as Sharding from "effect/cluster/Sharding"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type { Reader as ReaderModel } from "./internal/reader.ts"
import { durable, findJob } from "./internal/store.ts"
import { Conflict, Forgotten, type Item as ItemModel, SendFailed, submit as submitChunks } from "./internal/submit.ts"

/**
 * One request of a job: a URL (fetched with `GET`), a plain request, or an `HttpClientRequest`
 * whose body is empty, text or bytes (sent exactly as given, UTF-8 or not). A body is sent with
 * the item's own `Content-Type` (a plain request's header in any case; without one, text is
 * `text/plain`). Items are stored as they are, headers
 * included, so an item with credentials (an `Authorization`, `Proxy-Authorization`, `Cookie` or
 * `X-Api-Key` header, or one named in the submitting fiber's `Headers.CurrentRedactedNames`; a
 * `Redacted` URL parameter, or one named in its `UrlParams.CurrentRedactedNames`, signed-URL
 * parameters by default; a URL with a `user:password@`) is not stored and fails as `InvalidItem`:
 * set credentials on the runners' `HttpClient` instead. No `InvalidItem` detail quotes a URL's
 * `user:password` or such a parameter's value. From untyped input (JSON), an item that is none of
 * these (`null`, a method, header value or body that is not a string) fails as `InvalidItem` too.
 *
 * @example
 * ```ts
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const items: ReadonlyArray<ClusterFanout.Item> = [
 *   "http://127.0.0.1:8080/a",
 *   new URL("http://127.0.0.1:8080/b"),
 *   { method: "POST", url: "http://127.0.0.1:8080/c", headers: { "content-type": "text/plain" }, body: "hi" }
 * ]
 * const program = ClusterFanout.submit("mixed-1", items)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Item = ItemModel

/**
 * A named way to read a response into a value that can be stored (its `success` schema encodes it
 * to JSON), registered on every runner with `ClusterRunner.layer({ readers })` and chosen per job
 * with `reader`. Without one, a runner reads the body and stores its size.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const length: ClusterFanout.Reader<number> = ClusterFanout.reader({
 *   name: "length",
 *   success: Schema.Number,
 *   read: (response) => Effect.map(response.text, (text) => text.length)
 * })
 * const program = ClusterFanout.submit("lengths-1", ["http://127.0.0.1:8080/"], { reader: length })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Reader<A = unknown> = ReaderModel<A>

/**
 * Declares a {@link Reader}. Put it in a module that runners and clients both import.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * export const title = ClusterFanout.reader({
 *   name: "title",
 *   success: Schema.String,
 *   read: (response) => Effect.map(response.text, (html) => /<title>(.*?)<\/title>/.exec(html)?.[1] ?? "")
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const reader = <A, E>(options: {
  readonly name: string
  readonly success: Schema.Codec<A, unknown>
  readonly read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E>
}): Reader<A> => options

/**
 * Options of {@link submit}.
 *
 * @example
 * ```ts
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const options: ClusterFanout.SubmitOptions = { perHost: 2, chunkSize: 50, reader: "title" }
 * const program = ClusterFanout.submit("crawl-2", ["http://127.0.0.1:8080/"], options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface SubmitOptions {
  /**
   * Requests at once to one origin, across the whole cluster: an integer in 1-2147483647, else
   * `InvalidOptionsError` (so is `chunkSize`).
   * @default 4
   */
  readonly perHost?: number | undefined
  /**
   * Items per stored message (all of one origin).
   * @default 100
   */
  readonly chunkSize?: number | undefined
  /** A reader registered on the runners, or its name. */
  // biome-ignore lint/suspicious/noExplicitAny: a reader of any value type
  readonly reader?: Reader<any> | string | undefined
}

/**
 * The job id exists with other items or options.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const program = ClusterFanout.submit("crawl-1", ["http://127.0.0.1:8080/other"]).pipe(
 *   Effect.catchTag("JobConflictError", (e) => Effect.logWarning(e.message).pipe(Effect.as(0)))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class JobConflictError extends Data.TaggedError("JobConflictError")<{
  readonly job: string
  readonly detail: string
}> {
  override get message(): string {
    return `job id reused with different items: ${this.detail}`
  }
}

/**
 * No job has that id (never submitted, or forgotten). From {@link submit}: the job it was storing
 * was forgotten while it ran (`detail` says so); the id may since hold a job submitted again,
 * which is left to its own submission.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const known = ClusterFanout.progress("crawl-1").pipe(
 *   Effect.as(true),
 *   Effect.catchTag("JobNotFoundError", () => Effect.succeed(false))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class JobNotFoundError extends Data.TaggedError("JobNotFoundError")<{
  readonly job: string
  readonly detail?: string | undefined
}> {
  override get message(): string {
    return `no job with id ${this.job}${this.detail === undefined ? "" : `: ${this.detail}`}`
  }
}

/**
 * A chunk of a job could not be handed to Effect's cluster (its message storage failed, or the
 * origin's mailbox was full): the job is partly submitted. Submitting it again with the same
 * items resumes it; nothing runs twice. `cause` is Effect's error.
 *
 * @example
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const program = ClusterFanout.submit("crawl-1", ["http://127.0.0.1:8080/"]).pipe(
 *   Effect.retry({ while: (e) => e._tag === "ChunkSendError", schedule: Schedule.spaced("5 seconds"), times: 3 })
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ChunkSendError extends Data.TaggedError("ChunkSendError")<{
  readonly job: string
  readonly chunk: number
  readonly origin: string
  readonly cause:
    | ClusterError.MailboxFull
    | ClusterError.AlreadyProcessingMessage
    | ClusterError.PersistenceError
    | ClusterError.EntityNotAssignedToRunner
}> {
  override get message(): string {
    return (
      `job ${this.job}: chunk ${this.chunk} (${this.origin}) could not be stored for the runners ` +
      `(${this.cause._tag}: ${this.cause.message}); submit the job again to resume it`
    )
  }
}

/**
 * Submits a job: stores it and its items in chunks, and returns the number of items. Submitting
 * the same job again (same id, items and options) is harmless: nothing runs twice, so a client
 * that crashed mid-submit (or failed with {@link ChunkSendError}) just submits again. The same id
 * with other items (another count, or any item different, invalid ones included) or options fails
 * with {@link JobConflictError}, and then none of this submission's items runs: the input is
 * compared with the stored job before anything new is sent. So are two submissions of one id at
 * the same time, from anywhere: each chunk is claimed in PostgreSQL, in order, before it is sent,
 * so one wins and the other fails with {@link JobConflictError}, having sent only chunks equal to
 * the winner's (the same items at the same indexes, which run once, as the winner's); with the
 * same items and options, both succeed and each item runs once. An item that is not an
 * `http(s)` URL, or whose origin is longer than 255 characters (the longest entity id Effect's
 * cluster stores), gets a failed outcome (`InvalidItem`) as the input is read (a thousand at a
 * time; the last ones with the total); it has no origin, so it counts in the job's `total` and
 * `failed` but in none of `Progress.origins`. After {@link forget} (or the runners' retention),
 * the id is free: submitting it again runs the job again. A submit still running when its job is
 * forgotten fails with {@link JobNotFoundError} and writes nothing more; the job submitted again
 * under the id meanwhile is left to its own submission.
 *
 * Its memory is bounded whatever the size of the input and its number of origins: the input is
 * read as it is stored, and a submit holds at most 100,000 items (or 64 MiB of their requests as
 * JSON) in chunks not yet full, a thousand invalid items and 16 sends at a time (submitted again,
 * a partly submitted job's stored chunks are read to compare a thousand at a time). Past that, the
 * chunks not yet full that were started first are sent as they are, so an input of many origins
 * with few items each makes smaller chunks rather than being held until it ends. Which chunks
 * depends only on the input: the same input gives the same chunks, and resumes (a job submitted
 * in part by a version before this bound, which sent such chunks at the end of the input only,
 * resumes with the chunks it stored, holding its chunks not yet full as it did until past them).
 *
 * If the input `Stream` fails (or the submit is interrupted) part-way, the chunks already sent
 * run, submit fails with the stream's error, and the job stays partly submitted: no `total`, never
 * `finished` (so {@link wait} does not return), and never removed by the runners' retention, which
 * forgets finished jobs only. Recover by submitting the same input again (it resumes, nothing runs
 * twice), or {@link cancel} it (it then counts as finished, and retention forgets it) or
 * {@link forget} it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const urls = Array.from({ length: 10_000 }, (_, i) => `http://127.0.0.1:${8000 + (i % 50)}/page/${i}`)
 * const program = Effect.gen(function* () {
 *   yield* ClusterFanout.submit("crawl-1", urls, { perHost: 4 })
 *   return yield* ClusterFanout.wait("crawl-1")
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const submit = <E = never, R = never>(
  job: string,
  items: Iterable<Item> | Stream.Stream<Item, E, R>,
  options: SubmitOptions = {}
): Effect.Effect<
  number,
  E | JobConflictError | JobNotFoundError | ChunkSendError | Validate.InvalidOptionsError | SqlError.SqlError,
  R | Sharding.Sharding | SqlClient.SqlClient
> =>
  Effect.gen(function* () {
    const perHost = yield* storedInt("perHost", options.perHost ?? 4)
    const chunkSize = yield* storedInt("chunkSize", options.chunkSize ?? 100)
    if (job.length === 0 || job.length > 200) {
      return yield* new Validate.InvalidOptionsError({
        option: "job",
        reason: `job id must be 1-200 characters, got ${job.length}`
      })
    }
    const name =
      options.reader === undefined ? null : typeof options.reader === "string" ? options.reader : options.reader.name
    // PostgreSQL text cannot hold U+0000: refused here, typed, not as a failed insert.
    if (job.includes("\u0000") || name?.includes("\u0000")) {
      return yield* new Validate.InvalidOptionsError({
        option: job.includes("\u0000") ? "job" : "reader",
        reason: "must not contain the character U+0000"
      })
    }
    // A lone URL (a string stored an item per character, a URL object died) or request.
    if (!Stream.isStream(items)) {
      yield* Validate.iterable("items", items, "an iterable or a stream of items", "write [url] for one URL")
    }
    const stream = Stream.isStream(items) ? items : Stream.fromIterable(items)
    return yield* submitChunks({ job, perHost, chunkSize, reader: name }, stream).pipe(
      // First: a Forgotten has a Conflict's shape (and more), so it is no longer in the type after that.
      Effect.catchIf(
        (error): error is Forgotten => error instanceof Forgotten,
        (forgotten) => Effect.fail(new JobNotFoundError({ job, detail: forgotten.detail }))
      ),
      Effect.catchIf(
        (error): error is Conflict => error instanceof Conflict,
        (conflict) => Effect.fail(new JobConflictError({ job, detail: conflict.detail }))
      ),
      Effect.catchIf(
        (error): error is SendFailed => error instanceof SendFailed,
        (failed) =>
          Effect.fail(new ChunkSendError({ job, chunk: failed.chunk, origin: failed.origin, cause: failed.cause }))
      )
    )
  })

// perHost and chunkSize are stored in PostgreSQL `integer` columns: a larger value failed the
// job's insert with an SqlError ("out of range for type integer").
const storedInt = (option: string, value: number) =>
  Effect.flatMap(Validate.positiveInt(option, value), (n) =>
    n <= 2_147_483_647
      ? Effect.succeed(n)
      : Effect.fail(new Validate.InvalidOptionsError({ option, reason: `must be at most 2147483647, got ${n}` }))
  )

/**
 * Progress of one origin in a job. Items that failed as `InvalidItem` at submit have no origin
 * and are counted in no `OriginProgress`, only in the job's totals.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const left = ClusterFanout.progress("crawl-1").pipe(
 *   Effect.map((p) => p.origins.map((o: ClusterFanout.OriginProgress) => `${o.origin}: ${o.total - o.succeeded - o.failed} left`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface OriginProgress {
  readonly origin: string
  readonly total: number
  readonly succeeded: number
  readonly failed: number
  /** Items of chunks a runner has started and not finished, without an outcome yet. */
  readonly inFlight: number
}

/**
 * Where a job stands, from the database.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const percent = ClusterFanout.progress("crawl-1").pipe(
 *   Effect.map((p: ClusterFanout.Progress) => (p.total === undefined ? 0 : (100 * p.done) / p.total))
 * )
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Progress {
  readonly job: string
  /** `undefined` while the job is still being submitted. */
  readonly total: number | undefined
  readonly done: number
  readonly succeeded: number
  readonly failed: number
  readonly inFlight: number
  readonly cancelled: boolean
  /** Every item has an outcome, or the job was cancelled. */
  readonly finished: boolean
  /** One entry per origin with items; `InvalidItem` outcomes (no origin) are in none of them. */
  readonly origins: ReadonlyArray<OriginProgress>
}

/**
 * Reads a job's progress: done, failed and in flight, in total and per origin.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const line = ClusterFanout.progress("crawl-1").pipe(
 *   Effect.map((p) => `${p.done}/${p.total ?? "?"} (${p.failed} failed, ${p.inFlight} in flight)`)
 * )
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const progress = (
  job: string
): Effect.Effect<Progress, JobNotFoundError | SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const row = noSuchId(job) ? undefined : yield* findJob(job)
    if (row === undefined) return yield* new JobNotFoundError({ job })
    // Chunks of origin "" hold invalid items' outcomes (see ./internal/submit.ts), of no origin.
    const chunks = yield* sql<{ origin: string; total: string | number; in_flight: string | number }>`
      select c.origin, sum(c.size) as total,
        sum(case when c.started_at is not null and c.finished_at is null
          then c.size - (select count(*) from volley_results r where r.job_id = c.job_id and r.chunk = c.chunk)
          else 0 end) as in_flight
      from volley_chunks c where c.job_id = ${job} and c.origin <> '' group by c.origin`
    const outcomes = yield* sql<{ origin: string; succeeded: string | number; failed: string | number }>`
      select origin, count(*) filter (where ok) as succeeded, count(*) filter (where not ok) as failed
      from volley_results where job_id = ${job} group by origin`
    const byOrigin = new Map<string, { -readonly [K in keyof OriginProgress]: OriginProgress[K] }>()
    for (const c of chunks) {
      byOrigin.set(c.origin, {
        origin: c.origin,
        total: Number(c.total),
        succeeded: 0,
        failed: 0,
        inFlight: Number(c.in_flight)
      })
    }
    let succeeded = 0
    let failed = 0
    for (const o of outcomes) {
      succeeded += Number(o.succeeded)
      failed += Number(o.failed)
      const entry = byOrigin.get(o.origin)
      if (entry !== undefined) {
        entry.succeeded = Number(o.succeeded)
        entry.failed = Number(o.failed)
      }
    }
    const origins = [...byOrigin.values()]
    return {
      job,
      total: row.total === null ? undefined : Number(row.total),
      done: succeeded + failed,
      succeeded,
      failed,
      inFlight: origins.reduce((sum, o) => sum + o.inFlight, 0),
      cancelled: row.cancelled_at !== null,
      finished: row.finished_at !== null,
      origins
    }
  })

/**
 * Streams a job's progress every `interval` (default 1 second), ending with the first `finished`
 * one. A read that cannot reach PostgreSQL (a restart of a few seconds, which runners survive) is
 * tried again every 500 ms for up to about a minute; other `SqlError`s end the stream at once.
 * An `interval` that is not a positive duration fails the stream with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const printed = ClusterFanout.watch("crawl-1", { interval: "500 millis" }).pipe(
 *   Stream.runForEach((p) => Effect.log(`${p.done}/${p.total}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const watch = (
  job: string,
  options: { readonly interval?: Duration.Input | undefined } = {}
): Stream.Stream<Progress, JobNotFoundError | SqlError.SqlError | Validate.InvalidOptionsError, SqlClient.SqlClient> =>
  // Checked, as every option is: "NaN seconds" threw from this call, and 0 or a negative
  // interval polled PostgreSQL without a pause.
  Stream.unwrap(
    Effect.map(Validate.duration("interval", options.interval ?? "1 second", { positive: true }), (interval) =>
      Stream.fromEffectSchedule(durable(progress(job)), Schedule.spaced(interval)).pipe(
        Stream.takeUntil((p) => p.finished)
      )
    )
  )

/**
 * Waits until a job is finished (or cancelled) and returns its final progress; with `timeout`,
 * fails with `Cause.TimeoutError` past it. Like {@link watch}, it waits out a PostgreSQL restart,
 * never past `timeout`.
 * An `interval` or `timeout` that is not a positive duration fails with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const failed = ClusterFanout.wait("crawl-1", { timeout: "10 minutes" }).pipe(Effect.map((p) => p.failed))
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const wait = (
  job: string,
  options: { readonly interval?: Duration.Input | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<
  Progress,
  JobNotFoundError | SqlError.SqlError | Cause.TimeoutError | Validate.InvalidOptionsError,
  SqlClient.SqlClient
> => {
  const last = Stream.runLast(watch(job, options)).pipe(
    Effect.flatMap(Option.match({ onNone: () => Effect.fail(new JobNotFoundError({ job })), onSome: Effect.succeed }))
  )
  return options.timeout === undefined
    ? last
    : Effect.flatMap(Validate.duration("timeout", options.timeout, { positive: true }), (timeout) =>
        Effect.timeout(last, timeout)
      )
}

/**
 * A failed item: `reason` is the failure's tag (`StatusCodeError` with `status`, `TransportError`,
 * `TimeoutError`, `InvalidItem`, `ReaderNotFound`, ...), `detail` its message. `OutcomeNotStored`:
 * the item ran, but PostgreSQL refused its outcome (a constraint, a value it rejects; or a
 * deadlock, serialization failure, timeout or shortage such as too many connections, tried 5 times);
 * `detail` says what the outcome was and PostgreSQL's SQLSTATE and message. `ValueTooLarge`: the
 * job's reader gave a value over 15 MiB as JSON, more than a stored row can be read back with
 * (`status` is the response's). A `detail` longer than 65,536 characters is stored cut there.
 *
 * @example
 * ```ts
 * import { Result, Stream } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const notFound = ClusterFanout.results("crawl-1").pipe(
 *   Stream.filterMap((outcome) => Result.flip(outcome.result)),
 *   Stream.filter((failed: ClusterFanout.ItemFailed) => failed.status === 404),
 *   Stream.runCount
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ItemFailed extends Schema.TaggedError<ItemFailed>()("ItemFailed", {
  reason: Schema.String,
  detail: Schema.String,
  status: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    return `${this.reason}${this.status === undefined ? "" : ` (status ${this.status})`}: ${this.detail}`
  }
}

/**
 * A successful item: its status, the body's size (without a reader) or the reader's value.
 *
 * @example
 * ```ts
 * import { Stream } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const bytes = ClusterFanout.results("crawl-1").pipe(
 *   Stream.filterMap((outcome) => outcome.result),
 *   Stream.runFold(() => 0, (sum, success: ClusterFanout.Success<unknown>) => sum + (success.bytes ?? 0))
 * )
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Success<A> {
  readonly status: number
  readonly bytes: number | undefined
  readonly value: A | undefined
}

/**
 * One item's outcome, as stored.
 *
 * @example
 * ```ts
 * import { Result, Stream } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const lines = ClusterFanout.results("crawl-1").pipe(
 *   Stream.map((o: ClusterFanout.Outcome<unknown>) =>
 *     Result.isSuccess(o.result) ? `#${o.index} ${o.result.success.status}` : `#${o.index} ${o.result.failure.reason}`
 *   )
 * )
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome<A> {
  readonly index: number
  readonly origin: string
  /** The runner that wrote it (`host:port`), or `client` for an item rejected at submit. */
  readonly runner: string
  readonly result: Result.Result<Success<A>, ItemFailed>
}

interface ResultRow {
  readonly item: string | number
  readonly origin: string
  readonly ok: boolean
  readonly status: number | null
  readonly bytes: string | number | null
  readonly value: string | null
  readonly error_tag: string | null
  readonly error_message: string | null
  readonly runner: string
}

/**
 * Streams a job's outcomes in item order, read from the database in pages of `pageSize` (default
 * 1000; an integer >= 1, else the stream fails with `InvalidOptionsError`): those written so far,
 * for a job still running. With the job's `reader`, values are decoded with its schema.
 *
 * @example
 * ```ts
 * import { Result, Stream } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const failures = ClusterFanout.results("crawl-1").pipe(
 *   Stream.filter((outcome) => Result.isFailure(outcome.result)),
 *   Stream.runCount
 * )
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const results = <A = unknown>(
  job: string,
  options: { readonly reader?: Reader<A> | undefined; readonly pageSize?: number | undefined } = {}
): Stream.Stream<
  Outcome<A>,
  Validate.InvalidOptionsError | SqlError.SqlError | Schema.SchemaError,
  SqlClient.SqlClient
> => {
  const decode =
    options.reader === undefined
      ? (json: unknown) => Effect.succeed(json as A)
      : Schema.decodeUnknownEffect(Schema.toCodecJson(options.reader.success))
  return Stream.unwrap(
    Effect.map(Validate.positiveInt("pageSize", options.pageSize ?? 1000), (pageSize) =>
      Stream.paginate(-1, (after: number) =>
        Effect.flatMap(SqlClient.SqlClient, (sql) =>
          // No outcomes, as for any id no job has.
          noSuchId(job)
            ? Effect.succeed([])
            : sql<ResultRow>`select item, origin, ok, status, bytes, value, error_tag, error_message, runner
            from volley_results where job_id = ${job} and item > ${after} order by item limit ${pageSize}`
        ).pipe(
          Effect.flatMap((rows) => Effect.forEach(rows, (row) => toOutcome(row, decode))),
          Effect.map((page) => {
            const last = page.at(-1)
            return [
              page,
              page.length < pageSize || last === undefined ? Option.none() : Option.some(last.index)
            ] as const
          })
        )
      )
    )
  )
}

const toOutcome = <A>(
  row: ResultRow,
  decode: (json: unknown) => Effect.Effect<A, Schema.SchemaError>
): Effect.Effect<Outcome<A>, Schema.SchemaError> => {
  const base = { index: Number(row.item), origin: row.origin, runner: row.runner }
  if (!row.ok) {
    const failed = new ItemFailed({
      reason: row.error_tag ?? "Unknown",
      detail: row.error_message ?? "",
      ...(row.status === null ? {} : { status: row.status })
    })
    return Effect.succeed({ ...base, result: Result.fail(failed) })
  }
  const value = row.value === null ? Effect.succeed(undefined) : decode(JSON.parse(row.value))
  return Effect.map(value, (decoded) => ({
    ...base,
    result: Result.succeed({
      status: row.status ?? 0,
      bytes: row.bytes === null ? undefined : Number(row.bytes),
      value: decoded
    })
  }))
}

/**
 * Cancels a job: runners stop starting its items within about half a second (a running chunk
 * reads its job's state at most twice a second, so items it starts meanwhile still run: measured,
 * 81 with 8 at once to an origin answering in 2 ms; a chunk not yet started starts none), those
 * running finish (and then `progress` counts none in flight), and the job counts as finished
 * and cancelled at once. Returns `true` when this call cancelled it; `false` when the job had
 * already finished (every item has an outcome) or was cancelled before, and is left as it was: a
 * job whose items all ran does not read back as cancelled.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const stop = ClusterFanout.cancel("crawl-1").pipe(
 *   Effect.tap((cancelled) => (cancelled ? Effect.void : Effect.log("crawl-1 had already finished")))
 * )
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const cancel = (
  job: string
): Effect.Effect<boolean, JobNotFoundError | SqlError.SqlError, SqlClient.SqlClient> =>
  noSuchId(job)
    ? Effect.fail(new JobNotFoundError({ job }))
    : Effect.flatMap(SqlClient.SqlClient, (sql) =>
        Effect.flatMap(
          // One statement: the job's existence and the update are read from the same snapshot. A job
          // whose every item has an outcome, not yet marked finished (its last runner between its
          // last outcome and the mark, or killed there), is finished, not cancelled.
          sql<{ found: boolean; cancelled: boolean }>`with cancelled as (
          update volley_jobs j set finished_at = now(), cancelled_at = case
            when j.total = (select count(*) from volley_results r where r.job_id = j.job_id) then null else now() end
          where j.job_id = ${job} and j.finished_at is null returning j.cancelled_at)
        select exists (select 1 from volley_jobs where job_id = ${job}) as found,
          exists (select 1 from cancelled where cancelled_at is not null) as cancelled`,
          ([row]) =>
            row === undefined || !row.found ? Effect.fail(new JobNotFoundError({ job })) : Effect.succeed(row.cancelled)
        )
      )

/**
 * Deletes a job with its chunks and outcomes (runners do it for finished jobs after their
 * `retention`). Chunks not yet run are then skipped. The id is then free: a job submitted again
 * under it is a new job and runs.
 *
 * @example
 * ```ts
 * import { ClusterFanout } from "@volley/cluster"
 *
 * const cleanUp = ClusterFanout.forget("crawl-1")
 * ```
 *
 * @since 0.1.0
 * @category watching
 */
export const forget = (job: string): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  noSuchId(job)
    ? Effect.void
    : Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.asVoid(sql`delete from volley_jobs where job_id = ${job}`))

// PostgreSQL text cannot hold U+0000, so no job has an id with one (submit refuses it): looked up,
// such an id failed with an SqlError (SQLSTATE 22021, invalid byte sequence), not as an unknown job.
const noSuchId = (job: string): boolean => job.includes("\u0000")
