// The protocol between the pool and its threads, as Schemas. The types are what both sides
// compile against; the hot path does not run a decoder per message (structured clone already
// guarantees the shape, and a decode per no-op task would cost more than the task), the task's
// own payload/success/failure Schemas validate the user data on each side.
import type * as Blocking from "@volley/core/Blocking"
import * as Schema from "effect/Schema"

/** Slots in the shared control buffer: [0] = seq of the running task, [1 + seq % RING] = cancelled seq. */
export const RING = 1024

/**
 * Jobs travel flat, JOB_FIELDS values per job: [seq, task id, encoded payload, traceId, spanId,
 * timed]. Structured clone pays per object, so one flat array per batch is much cheaper than an
 * object per job; the task id is announced once per thread in `tasks` as [id, module URL, name].
 * `timed` is 1 for a job with a run timeout: the pool arms it when it learns that the job is first
 * in line, so the thread reports the results it holds back before it starts that job.
 */
export const JOB_FIELDS = 6

export const ToWorker = Schema.Union([
  Schema.TaggedStruct("Run", {
    tasks: Schema.Array(Schema.Tuple([Schema.Number, Schema.String, Schema.String])),
    jobs: Schema.Array(Schema.Unknown)
  }),
  Schema.TaggedStruct("Abort", { seq: Schema.Number })
])
export type ToWorker = typeof ToWorker.Type

/** Replies only a pool produces: the task was skipped after a cancel, or could not be found. */
export const PoolReply = Schema.Union([
  Schema.TaggedStruct("Cancelled", {}),
  Schema.TaggedStruct("NotFound", { reason: Schema.String })
])
export type WireReply = Blocking.Reply | typeof PoolReply.Type

/**
 * Results travel flat too, RESULT_FIELDS values per task: [seq, kind, value, run ms]. Kind
 * SUCCESS carries the encoded success value alone (the common case, no reply object to clone);
 * kind REPLY carries any other reply object.
 */
export const RESULT_FIELDS = 4
export const SUCCESS = 0
export const REPLY = 1

export const FromWorker = Schema.Union([
  Schema.TaggedStruct("Ready", {}),
  Schema.TaggedStruct("Done", { results: Schema.Array(Schema.Unknown) })
])
export type FromWorker = typeof FromWorker.Type

export interface WorkerData {
  readonly control: SharedArrayBuffer
}
