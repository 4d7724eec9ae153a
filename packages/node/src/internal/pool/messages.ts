// The protocol between the pool and its threads, as Schemas. The types are what both sides
// compile against; the hot path does not run a decoder per message (structured clone already
// guarantees the shape, and a decode per no-op task would cost more than the task), the task's
// own payload/success/failure Schemas validate the user data on each side.
import type { Blocking } from "@volley/core"
import * as Schema from "effect/Schema"

/** Slots in the shared control buffer: [0] = seq of the running task, [1 + seq % RING] = cancelled seq. */
export const RING = 1024

/** A task as sent to a thread: [seq, module URL, task name, encoded payload, traceId, spanId]. */
export const RunJob = Schema.Tuple([
  Schema.Number,
  Schema.String,
  Schema.String,
  Schema.Unknown,
  Schema.UndefinedOr(Schema.String),
  Schema.UndefinedOr(Schema.String)
])
export type RunJob = typeof RunJob.Type

export const ToWorker = Schema.Union([
  Schema.TaggedStruct("Run", { jobs: Schema.Array(RunJob) }),
  Schema.TaggedStruct("Abort", { seq: Schema.Number })
])
export type ToWorker = typeof ToWorker.Type

/** Replies only a pool produces: the task was skipped after a cancel, or could not be found. */
export const PoolReply = Schema.Union([
  Schema.TaggedStruct("Cancelled", {}),
  Schema.TaggedStruct("NotFound", { reason: Schema.String })
])
export type WireReply = Blocking.Reply | typeof PoolReply.Type

/** A finished task: [seq, reply, run time in ms measured in the thread]. */
export type Result = readonly [seq: number, reply: WireReply, runMillis: number]

export const FromWorker = Schema.Union([
  Schema.TaggedStruct("Ready", {}),
  Schema.TaggedStruct("Done", { results: Schema.Array(Schema.Unknown) })
])
export type FromWorker = { readonly _tag: "Ready" } | { readonly _tag: "Done"; readonly results: ReadonlyArray<Result> }

export interface WorkerData {
  readonly control: SharedArrayBuffer
}
