import { Blocking } from "@volley/core"
import * as ClusterSchema from "effect/cluster/ClusterSchema"
import * as Entity from "effect/cluster/Entity"
import * as Rpc from "effect/rpc/Rpc"
import * as Schema from "effect/Schema"

/**
 * One request as it is stored: plain data, so it survives the database and the wire. A body is
 * UTF-8 text, or with `bodyEncoding: "base64"` bytes that are not (absent in rows stored before
 * it existed, whose bodies are all text); its content type is the `content-type` header, if any.
 */
export const WireRequest = Schema.Struct({
  method: Schema.String,
  url: Schema.String,
  headers: Schema.Record(Schema.String, Schema.String),
  body: Schema.NullOr(Schema.String),
  bodyEncoding: Schema.optionalKey(Schema.Literal("base64"))
})
export type WireRequest = typeof WireRequest.Type

/** A chunk: up to `chunkSize` items of one job for one origin, sent as one persisted message. */
export const Chunk = Schema.Struct({
  job: Schema.String,
  /** The submission's nonce (the job row's): see {@link RunChunk}. */
  nonce: Schema.String,
  chunk: Schema.Int,
  origin: Schema.String,
  perHost: Schema.Int,
  reader: Schema.NullOr(Schema.String),
  items: Schema.Array(Schema.Struct({ index: Schema.Int, request: WireRequest }))
})
export type Chunk = typeof Chunk.Type

/**
 * The entity that owns an origin. Its id is the origin, so every chunk for that origin, from every
 * job and client, is handled by the one runner that holds its shard: the per-host bound is enforced
 * there, and so holds cluster-wide. `primaryKey` makes a chunk sent twice (a client retrying a
 * submit) run once. It holds the submission's nonce, not just the job id: Effect's cluster keeps
 * the keys of processed messages (until a `MessageRetention` clears them), so a job id forgotten
 * and submitted again would otherwise be deduplicated away and never run. The nonce is stored in
 * the job's row, so resending the same submission reuses it; a new row (after `forget` or the
 * runners' retention) gets a new one.
 */
export const RunChunk = Rpc.make("RunChunk", {
  payload: Chunk.fields,
  primaryKey: (chunk) => `${chunk.job}/${chunk.nonce}/${chunk.chunk}`
})

export const OriginEntity = Entity.make("VolleyOrigin", [RunChunk])
  .annotateRpcs(ClusterSchema.Persisted, true)
  // When the origin's shard moves (a runner joins or leaves), a running chunk is interrupted at
  // once rather than waited for: its started items finish and write their outcomes, the rest go
  // on under the next owner. Otherwise Effect's cluster waits up to `entityTerminationTimeout`
  // (15 s) and then moves the shard anyway, with the old runner's items still in flight.
  .annotateRpcs(ClusterSchema.InterruptOnTermination, true)

/** Every error a runner's executor can answer a task call with; they are Schema classes, so they are stored. */
export const TaskError = Schema.Union([
  Blocking.InvalidPayloadError,
  Blocking.InvalidResultError,
  Blocking.HandlerError,
  Blocking.TaskTimeoutError,
  Blocking.WorkerDiedError,
  Blocking.TaskNotFoundError,
  Blocking.QueueFullError,
  Blocking.ExecutorShutDownError
])

/** A blocking task call: the task is found on the runner by name (and its module's file name). */
export const RunTask = Rpc.make("RunTask", {
  payload: {
    id: Schema.String,
    module: Schema.String,
    task: Schema.String,
    payload: Schema.Unknown,
    timeoutMillis: Schema.NullOr(Schema.Number)
  },
  success: Schema.Unknown,
  error: TaskError,
  primaryKey: (call) => call.id
})

export const TaskEntity = Entity.make("VolleyTask", [RunTask]).annotateRpcs(ClusterSchema.Persisted, true)
