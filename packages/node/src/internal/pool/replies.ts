// Replies: a thread's batch of results comes back; each is matched to its job, recorded (run time,
// the per-task average that sizes the dispatch window, the module's health) and settled.
import * as Blocking from "@volley/core/Blocking"
import { started } from "./cancellation.ts"
import type { Engine } from "./engine.ts"
import { finish, type Job, type Outcome, SENT } from "./job.ts"
import { RESULT_FIELDS, SUCCESS, type WireReply } from "./messages.ts"
import type { Slot } from "./thread.ts"

export const done = (pool: Engine, slot: Slot, results: ReadonlyArray<unknown>): void => {
  for (let i = 0; i < results.length; i += RESULT_FIELDS) {
    const seq = results[i] as number
    const reply: WireReply =
      results[i + 1] === SUCCESS ? { _tag: "Success", value: results[i + 2] } : (results[i + 2] as WireReply)
    const runMillis = results[i + 3] as number
    // Replies come in the order jobs were sent; the search is for the rare out-of-order case.
    let job = slot.inFlight[0]
    if (job?.seq === seq) slot.inFlight.shift()
    else {
      const index = slot.inFlight.findIndex((job) => job.seq === seq)
      if (index < 0) continue
      job = slot.inFlight.splice(index, 1)[0]
    }
    if (job === undefined) continue
    if (reply._tag !== "Cancelled") {
      const avg = pool.avgRunMillis[job.taskId] ?? 1
      pool.avgRunMillis[job.taskId] = avg + (runMillis - avg) / 8
      pool.options.observe.runTime(runMillis)
    }
    job.grace?.()
    if (reply._tag !== "Cancelled" && reply._tag !== "NotFound") pool.breaker.moduleWorked(job.module)
    if (job.state !== SENT) continue
    job.request.span.attribute("volley.blocking.run_ms", runMillis)
    finish(job, outcomeOf(job, reply))
  }
  const next = slot.inFlight[0]
  if (next !== undefined) started(pool, next)
  // Idle is decided in pump, after refilling: no unref/idle-timer churn between two tasks.
  pool.schedule()
}

const outcomeOf = (job: Job, reply: WireReply): Outcome => {
  switch (reply._tag) {
    case "NotFound":
      return { error: new Blocking.TaskNotFoundError({ task: job.name, module: job.module, reason: reply.reason }) }
    case "Cancelled":
      return { error: new Blocking.ExecutorShutDownError({ task: job.name }) }
    default:
      return { reply }
  }
}
