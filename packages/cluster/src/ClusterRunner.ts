/**
 * Runners and clients of a volley cluster: processes that share one PostgreSQL database through
 * Effect's cluster (`effect/cluster`, socket transport). A runner owns a share of the shards and
 * works the jobs and tasks whose entities live there; a client only submits and watches.
 *
 * - **Storage**: PostgreSQL through `@effect/sql-pg`. Effect's `cluster_*` tables and volley's
 *   `volley_*` tables are created on start-up.
 * - **Delivery**: at-least-once with deduplication. Chunks and task calls are persisted before
 *   they run; a runner that dies (SIGKILL) loses nothing, its shards move to the others after
 *   `shardLockExpiration` and what it was running runs again there; each item's outcome is still
 *   written once. A runner stopped with SIGTERM finishes what it started and hands its shards over.
 * - **Environment**: the cluster ignores `PORT`, `HOST` and every other environment variable
 *   (Effect's cluster reads them by default); all settings come from the options.
 * - **Start-up bound**: an unreachable database fails the layer with {@link ClusterStartError}
 *   within `connectTimeout` (default 5 seconds) plus a few seconds; a runner port in use fails it at once.
 *
 * @since 0.1.0
 */

import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import { PgClient } from "@effect/sql-pg"
import * as MessageRetention from "effect/cluster/MessageRetention"
import type * as MessageStorage from "effect/cluster/MessageStorage"
import * as RunnerAddress from "effect/cluster/RunnerAddress"
import type * as Sharding from "effect/cluster/Sharding"
import type * as ShardingConfig from "effect/cluster/ShardingConfig"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as SqlClient from "effect/sql/SqlClient"
import * as Embedded from "./internal/embedded.ts"
import { OriginEntity } from "./internal/model.ts"
import type { Reader } from "./internal/reader.ts"
import * as Socket from "./internal/socket.ts"
import { migrate, sweepFinished } from "./internal/store.ts"
import { makeWorker, runChunk, Worker } from "./internal/worker.ts"

/**
 * Where the database is.
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const database: ClusterRunner.DatabaseOptions = {
 *   url: Redacted.make("postgres://volley:s3cret@127.0.0.1:5432/volley"),
 *   maxConnections: 4
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface DatabaseOptions {
  /**
   * A `postgres://` (or `postgresql://`) URL; keep passwords in a `Redacted`. Checked when the layer
   * is built: one that does not parse fails with `ClusterStartError` `InvalidOptions`.
   */
  readonly url: string | Redacted.Redacted<string>
  /**
   * Longest wait for the first connection.
   * @default "5 seconds"
   */
  readonly connectTimeout?: Duration.Input | undefined
  /**
   * Connections in the pool (a runner also holds one more for its shard locks).
   * @default 10
   */
  readonly maxConnections?: number | undefined
}

/**
 * Timings of the cluster: `"default"` are Effect's (a dead runner's shards move after ~35 s);
 * `"fast"` are the short ones used in tests and the example (shards move after ~5 s, at the cost
 * of more polling): lock refresh 2 s, lock expiry 6 s, assignments 1 s, health checks 2 s,
 * message poll 1 s, reply poll 50 ms.
 *
 * @example
 * ```ts
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const timings: ClusterRunner.Timings = process.env.CI === undefined ? "default" : "fast"
 * const Client = ClusterRunner.layerClient({ database: { url: "postgres://127.0.0.1:5432/volley" }, timings })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Timings = "default" | "fast"

/**
 * Options of a client: the database, the timings, and any other sharding settings.
 *
 * @example
 * ```ts
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const options: ClusterRunner.ClientOptions = {
 *   database: { url: "postgres://127.0.0.1:5432/volley" },
 *   shardingConfig: { sendRetryInterval: "200 millis" }
 * }
 * const Client = ClusterRunner.layerClient(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions {
  readonly database: DatabaseOptions
  /** @default "default" */
  readonly timings?: Timings | undefined
  /** Any other setting of Effect's `ShardingConfig`; wins over `timings`. */
  readonly shardingConfig?: Partial<ShardingConfig.ShardingConfig["Service"]> | undefined
}

/**
 * Options of a runner.
 *
 * @example
 * ```ts
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const options: ClusterRunner.Options = {
 *   database: { url: "postgres://127.0.0.1:5432/volley" },
 *   port: 9001,
 *   concurrency: 32,
 *   retention: "1 day"
 * }
 * const Runner = ClusterRunner.layer(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends ClientOptions {
  /**
   * The address other runners reach this one on (it also listens there).
   * @default "127.0.0.1"
   */
  readonly host?: string | undefined
  /** The runner's port; pick one below 32768 (Linux's ephemeral range starts there). */
  readonly port: number
  /**
   * Requests this runner runs at once, across every origin and job.
   * @default 64
   */
  readonly concurrency?: number | undefined
  /** Readers that jobs may name in `ClusterFanout.submit`'s `reader`. */
  // biome-ignore lint/suspicious/noExplicitAny: a reader of any value type
  readonly readers?: ReadonlyArray<Reader<any>> | undefined
  /**
   * How long a finished job's rows and its processed messages are kept; `Infinity`: for good.
   * A sweep that fails (PostgreSQL away) logs a warning and runs again a minute later.
   * @default "1 hour"
   */
  readonly retention?: Duration.Input | undefined
}

/**
 * A runner or client could not start: the database is unreachable, the port is taken, or an
 * option is wrong (a database URL that does not parse, too). `reason` says which; `message` names
 * the value. The database password is in no part of it: `cause` keeps only the names, messages
 * and codes of the driver's errors, with the password cut out.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const Client = ClusterRunner.layerClient({ database: { url: "postgres://127.0.0.1:5432/volley" } }).pipe(
 *   Layer.tapError((e: ClusterRunner.ClusterStartError) => Effect.logError(`${e.reason}: ${e.detail}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ClusterStartError extends Data.TaggedError("ClusterStartError")<{
  readonly reason: "DatabaseUnreachable" | "PortInUse" | "InvalidOptions"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `cluster start-up failed (${this.reason}): ${this.detail}`
  }
}

/**
 * What a runner or client layer provides: Effect's `Sharding` and `MessageStorage`, and the
 * database's `SqlClient`.
 *
 * @example
 * ```ts
 * import type { Effect } from "effect"
 * import { ClusterFanout, type ClusterRunner } from "@volley/cluster"
 *
 * // Every ClusterFanout function needs only what a runner or client layer provides.
 * const submitted: Effect.Effect<number, unknown, ClusterRunner.ClusterRunnerServices> =
 *   ClusterFanout.submit("crawl-1", ["http://127.0.0.1:8080/"])
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type ClusterRunnerServices = Sharding.Sharding | MessageStorage.MessageStorage | SqlClient.SqlClient

/**
 * The short timings of `timings: "fast"`, as Effect `ShardingConfig` settings.
 *
 * @example
 * ```ts
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const lockExpiry = ClusterRunner.fastTimings.shardLockExpiration // "6 seconds"
 * ```
 *
 * @since 0.1.0
 * @category constants
 */
export const fastTimings: Partial<ShardingConfig.ShardingConfig["Service"]> = {
  shardLockRefreshInterval: "2 seconds",
  shardLockExpiration: "6 seconds",
  refreshAssignmentsInterval: "1 second",
  runnerHealthCheckInterval: "2 seconds",
  entityMessagePollInterval: "1 second",
  entityReplyPollInterval: "50 millis",
  sendRetryInterval: "50 millis"
}

/**
 * A client of the cluster: `Sharding` to send to entities and the `SqlClient` of the database, so
 * `ClusterFanout.*` and `ClusterBlocking.layer` work; it runs nothing itself.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { ClusterFanout, ClusterRunner } from "@volley/cluster"
 *
 * const program = ClusterFanout.progress("crawl-1").pipe(
 *   Effect.provide(ClusterRunner.layerClient({ database: { url: "postgres://postgres@127.0.0.1:5432/volley" } }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient = (options: ClientOptions): Layer.Layer<ClusterRunnerServices, ClusterStartError> => {
  const invalid = validateClient(options)
  if (invalid !== undefined) {
    return Layer.effectContext(Effect.fail(new ClusterStartError({ reason: "InvalidOptions", detail: invalid })))
  }
  return Socket.layer(shardingConfig(options, Option.none()), true).pipe(
    Layer.provideMerge(database(options.database, "volley-client")),
    Layer.catch(failStart(options))
  )
}

/**
 * A runner: joins the cluster on `host:port`, takes its share of the shards and works the chunks of
 * every job with the `HttpClient` (and `Retry.RetryPolicy`) you provide, so retries, timeouts,
 * proxies and the connection pool are the runner's layers, as in one process. Add
 * `ClusterBlocking.layerRunner` to run blocking tasks too.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { NodeRuntime } from "@effect/platform-node"
 * import { ClusterRunner } from "@volley/cluster"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const runner = ClusterRunner.layer({
 *   port: 24001,
 *   database: { url: "postgres://postgres@127.0.0.1:5432/volley" },
 *   concurrency: 32
 * }).pipe(Layer.provide(NodeHttpClient.layer()))
 *
 * // NodeRuntime.runMain(Layer.launch(runner))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<ClusterRunnerServices, ClusterStartError, HttpClient.HttpClient> => {
  const host = options.host ?? "127.0.0.1"
  const invalid = validate(options) ?? validateClient(options)
  if (invalid !== undefined) {
    return Layer.effectContext(Effect.fail(new ClusterStartError({ reason: "InvalidOptions", detail: invalid })))
  }
  const address = Option.some(RunnerAddress.make(host, options.port))
  return work(options, `${host}:${options.port}`).pipe(
    Layer.provideMerge(Socket.layer(shardingConfig(options, address), false)),
    Layer.provideMerge(database(options.database, `volley-runner ${host}:${options.port}`)),
    Layer.catch(failStart(options))
  )
}

/**
 * Options of {@link layerEmbedded}.
 *
 * @example
 * ```ts
 * import { ClusterRunner } from "@volley/cluster"
 *
 * const options: ClusterRunner.EmbeddedOptions = { dir: ".volley-data", concurrency: 16 }
 * const Local = ClusterRunner.layerEmbedded(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface EmbeddedOptions {
  /** The directory that holds the database; it survives restarts of the process. */
  readonly dir: string
  /**
   * Requests run at once.
   * @default 64
   */
  readonly concurrency?: number | undefined
  /** Readers that jobs may name in `ClusterFanout.submit`'s `reader`. */
  // biome-ignore lint/suspicious/noExplicitAny: a reader of any value type
  readonly readers?: ReadonlyArray<Reader<any>> | undefined
  /**
   * How long a finished job's rows and its processed messages are kept; `Infinity`: for good.
   * A sweep that fails (PostgreSQL away) logs a warning and runs again a minute later.
   * @default "1 hour"
   */
  readonly retention?: Duration.Input | undefined
}

/**
 * The one-machine default: a single runner in this process (Effect's `SingleRunner`, no sockets)
 * with its store in `dir`, so the same job API works without a database server to run or
 * administer, and a job survives a restart (or a crash) of the process: started again on the same
 * `dir`, it finishes the jobs it had.
 *
 * The store is PostgreSQL itself, run from the system's PostgreSQL binaries by this process on a
 * Unix socket in `dir` (no TCP port) and stopped with it; the server must be installed (Debian:
 * `postgresql`), not set up. Why not a file database: Effect 4.1 has no SQLite driver on the
 * registry (`@effect/sql-sqlite-node` stops at Effect 3 and its 4.x betas do not load with 4.1),
 * one SQLite file cannot be shared by two runners anyway, and PGlite breaks past one connection.
 * To grow past one machine, point `ClusterRunner.layer` runners at any PostgreSQL.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { ClusterFanout, ClusterRunner } from "@volley/cluster"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const program = Effect.gen(function* () {
 *   yield* ClusterFanout.submit("crawl-1", ["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"])
 *   return yield* ClusterFanout.wait("crawl-1")
 * }).pipe(
 *   Effect.provide(ClusterRunner.layerEmbedded({ dir: ".volley" }).pipe(Layer.provide(NodeHttpClient.layer())))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEmbedded = (
  options: EmbeddedOptions
): Layer.Layer<ClusterRunnerServices, ClusterStartError, HttpClient.HttpClient> => {
  const invalid = validate({ port: 1, concurrency: options.concurrency, retention: options.retention })
  if (invalid !== undefined) {
    return Layer.effectContext(Effect.fail(new ClusterStartError({ reason: "InvalidOptions", detail: invalid })))
  }
  const store = Layer.unwrap(
    Effect.map(
      Effect.mapError(
        Embedded.start(options.dir),
        (detail) => new ClusterStartError({ reason: "DatabaseUnreachable", detail })
      ),
      (path) => database({ url: "postgres://postgres@localhost/postgres", path, maxConnections: 10 }, "volley-embedded")
    )
  )
  return work(options, "embedded").pipe(
    Layer.provideMerge(Socket.single({ entityMessagePollInterval: "1 second" })),
    Layer.provide(NodeCrypto.layerDigest),
    Layer.provideMerge(store),
    Layer.catch(failStart({ database: { url: options.dir } }))
  )
}

// What every runner does: the origin entities and their worker, retention of messages and jobs.
const work = (options: Pick<Options, "concurrency" | "readers" | "retention">, runner: string) => {
  const retention = options.retention ?? "1 hour"
  const handlers = OriginEntity.toLayer(
    Effect.gen(function* () {
      const context = yield* Effect.context<Worker | SqlClient.SqlClient | HttpClient.HttpClient>()
      return OriginEntity.of({
        RunChunk: (envelope) => Effect.orDie(Effect.provide(runChunk(envelope.payload), context))
      })
    }),
    // One chunk of an origin at a time, its items `perHost` at a time: the origin's entity lives on
    // one runner, so the bound holds cluster-wide. An origin with nothing queued leaves after 5 s
    // (the shortest idle time Effect's reaper sees, checked every 5 s): a runner holds at most
    // `maxResidentEntities` (10,000) at once, so a crawl over more origins waits ~5-10 s for a
    // finished origin's place, not the 1-1.5 min of a minute's idle time.
    { concurrency: 1, maxIdleTime: "5 seconds" }
  )
  const worker = Layer.effect(Worker, makeWorker(runner, options.concurrency ?? 64, options.readers ?? []))
  // As Effect's MessageRetention does: a sweep that fails (PostgreSQL away) says so, and runs again
  // a minute later.
  const cleanup = Layer.effectDiscard(
    Effect.forkScoped(
      sweepFinished(Duration.fromInputUnsafe(retention)).pipe(
        Effect.catchCause((cause) => Effect.logWarning("volley: deleting finished jobs failed", cause)),
        Effect.repeat(Schedule.spaced("1 minute"))
      )
    )
  )
  return Layer.mergeAll(
    handlers,
    MessageRetention.make({ entity: OriginEntity, retention, interval: "1 minute" }),
    cleanup
  ).pipe(Layer.provide(worker))
}

// The application name tells runners apart in pg_stat_activity (and who holds which shard lock).
const database = (
  options: DatabaseOptions & { readonly path?: string },
  applicationName: string
): Layer.Layer<SqlClient.SqlClient, unknown> =>
  Layer.effectDiscard(migrate).pipe(
    Layer.provideMerge(
      PgClient.layer({
        url: typeof options.url === "string" ? Redacted.make(options.url) : options.url,
        ...(options.path === undefined ? {} : { path: options.path }),
        connectTimeout: options.connectTimeout ?? "5 seconds",
        maxConnections: options.maxConnections ?? 10,
        applicationName
      })
    )
  )

const shardingConfig = (
  options: ClientOptions,
  address: Option.Option<RunnerAddress.RunnerAddress>
): Partial<ShardingConfig.ShardingConfig["Service"]> => ({
  ...(options.timings === "fast" ? fastTimings : {}),
  ...options.shardingConfig,
  runnerAddress: address
})

const validate = (options: {
  readonly port: number
  readonly host?: string | undefined
  readonly concurrency?: number | undefined
  readonly retention?: Duration.Input | undefined
}): string | undefined => {
  const concurrency = options.concurrency ?? 64
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
    return `port must be an integer in 1-65535, got ${options.port}`
  }
  // A host that cannot be listened on was reported as a port in use.
  if (
    options.host !== undefined &&
    (typeof options.host !== "string" || !/^[A-Za-z0-9.:%[\]_-]+$/.test(options.host))
  ) {
    return `host must be a host name or an IP address, got ${shown(options.host)}`
  }
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    return `concurrency must be an integer >= 1, got ${concurrency}`
  }
  // A negative retention deleted finished jobs at once; one that is not a duration threw. An
  // infinite one keeps everything, as it did.
  return options.retention === undefined ? undefined : invalidDuration("retention", options.retention, 0, true)
}

/** What is wrong with a client's options, the database's included; undefined if nothing. */
const validateClient = (options: ClientOptions): string | undefined => {
  const { connectTimeout, maxConnections } = options.database
  // maxConnections 0 left the layer waiting for good; a connect timeout that is not a duration died.
  if (maxConnections !== undefined && (!Number.isInteger(maxConnections) || maxConnections < 1)) {
    return `database.maxConnections must be an integer >= 1, got ${maxConnections}`
  }
  if (connectTimeout !== undefined) {
    const invalid = invalidDuration("database.connectTimeout", connectTimeout, 1, false)
    if (invalid !== undefined) return invalid
  }
  if (options.timings !== undefined && options.timings !== "default" && options.timings !== "fast") {
    return `timings must be "default" or "fast", got ${shown(options.timings)}`
  }
  return invalidUrl(options.database.url)
}

// A duration of at least `least` milliseconds, finite unless `infinite` is allowed.
const invalidDuration = (name: string, input: Duration.Input, least: number, infinite: boolean): string | undefined => {
  const parsed = Duration.fromInput(input)
  const millis = Option.isSome(parsed) ? Duration.toMillis(parsed.value) : Number.NaN
  if (millis >= least && (infinite || Number.isFinite(millis))) return undefined
  return `${name} must be a ${infinite ? "" : "finite "}duration of at least ${least} ms, got ${shown(input)}`
}

// An option's value in a message, whatever it is (JSON.stringify throws on a bigint duration).
const shown = (value: unknown): string => {
  if (typeof value === "bigint") return `${value}n`
  if (typeof value === "number") return String(value)
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return typeof value
  }
}

const failStart =
  (options: ClientOptions & { readonly port?: number | undefined; readonly host?: string | undefined }) =>
  (error: unknown): Layer.Layer<ClusterRunnerServices, ClusterStartError> =>
    Layer.effectContext(Effect.fail(startError(error, options)))

const startError = (
  error: unknown,
  options: ClientOptions & { readonly port?: number | undefined; readonly host?: string | undefined }
) => {
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : ""
  if (tag === "SocketServerError") {
    return new ClusterStartError({
      reason: "PortInUse",
      detail: `cannot listen on ${options.host ?? "127.0.0.1"}:${options.port}`,
      cause: error
    })
  }
  if (tag === "ClusterStartError") return error as ClusterStartError
  const secrets = secretsOf(options.database.url)
  return new ClusterStartError({
    reason: "DatabaseUnreachable",
    detail: `cannot use PostgreSQL at ${where(options.database.url)}: ${scrub(String((error as Error)?.message ?? error), secrets)}`,
    cause: sanitised(error, secrets)
  })
}

// Checked before PgClient sees the URL: its parse errors keep Node's TypeError, whose `input` is
// the whole URL, password included. The detail never quotes the URL for the same reason.
const invalidUrl = (url: string | Redacted.Redacted<string>): string | undefined => {
  let parsed: URL
  try {
    parsed = new URL(typeof url === "string" ? url : Redacted.value(url))
  } catch {
    return "database.url is not a valid URL (not shown: it may hold a password); check that the port is in 1-65535 and that special characters in the user name and password are percent-encoded"
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return `database.url must be a postgres:// or postgresql:// URL, got ${parsed.protocol}//`
  }
  try {
    decodeURIComponent(parsed.username)
    decodeURIComponent(parsed.password)
  } catch {
    return "database.url has a malformed percent-encoding in its user name or password"
  }
  return undefined
}

// The passwords of the URL (`user:password@` as written and decoded, and a `?password=`), to cut
// out of any text a start-up error shows.
const secretsOf = (url: string | Redacted.Redacted<string>): ReadonlyArray<string> => {
  try {
    const parsed = new URL(typeof url === "string" ? url : Redacted.value(url))
    const secrets = [parsed.password, decodeURIComponent(parsed.password), parsed.searchParams.get("password") ?? ""]
    return [...new Set(secrets.filter((secret) => secret !== ""))]
  } catch {
    // invalidUrl refused it already (the layer failed before connecting).
    return []
  }
}

const scrub = (text: string, secrets: ReadonlyArray<string>): string =>
  secrets.reduce((out, secret) => out.split(secret).join("<redacted>"), text)

// A start-up error's cause, as names, messages and codes only: the raw errors of sql-pg and of
// the driver may hold the URL or the connection options (with the password) in other fields.
const sanitised = (error: unknown, secrets: ReadonlyArray<string>, depth = 0): Error | undefined => {
  if (typeof error !== "object" || error === null || depth > 5) return undefined
  const { _tag, name, message, code, cause } = error as {
    readonly _tag?: unknown
    readonly name?: unknown
    readonly message?: unknown
    readonly code?: unknown
    readonly cause?: unknown
  }
  const next = cause === error ? undefined : sanitised(cause, secrets, depth + 1)
  const text = scrub(`${String(message ?? "")}${code === undefined ? "" : ` (code ${String(code)})`}`, secrets)
  const copy = new Error(text, next === undefined ? undefined : { cause: next })
  copy.name = scrub(String(_tag ?? name ?? "Error"), secrets)
  // The copy's own stack would point here, not at the failure: keep just its first line.
  copy.stack = `${copy.name}: ${text}`
  return copy
}

// The URL without its password, for error messages.
const where = (url: string | Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(typeof url === "string" ? url : Redacted.value(url))
    return `${parsed.hostname}:${parsed.port || "5432"}${parsed.pathname}`
  } catch {
    return "an invalid URL"
  }
}
