// The inline executor: runs the handler on the calling thread, but still clones the payload and
// the reply with `structuredClone`, so what passes here also passes a thread boundary.
import * as Effect from "effect/Effect"
import * as Codec from "./codec.ts"
import * as Blocking from "./model.ts"

export const execute = (request: Blocking.Request): Effect.Effect<Blocking.Reply, Blocking.BlockingError> => {
  const task = request.task
  const running = Effect.callback<Blocking.Reply, Blocking.BlockingError>((resume) => {
    let payload: unknown
    try {
      payload = structuredClone(request.payload, { transfer: [...request.transfer] })
    } catch (error) {
      return resume(Effect.fail(new Blocking.InvalidPayloadError({ task: task.name, reason: Codec.describe(error) })))
    }
    const controller = new AbortController()
    const context: Blocking.TaskContext = {
      signal: controller.signal,
      traceId: request.span.traceId,
      spanId: request.span.spanId
    }
    const transfer: Array<Transferable> = []
    const reply = Codec.invoke(Codec.codecsOf(task), task, payload, context, transfer)
    if (!(reply instanceof Promise)) return resume(cloneReply(task, reply, transfer))
    reply.then(
      (reply) => resume(cloneReply(task, reply, transfer)),
      // Codec.invoke never rejects; should it ever, the caller fails instead of waiting forever.
      (thrown: unknown) => resume(Effect.fail(handlerError(task, thrown)))
    )
    // Interruption returns at once; the handler sees the abort and its result is dropped.
    return Effect.sync(() => controller.abort())
  })
  const timeoutMillis = request.timeoutMillis
  return timeoutMillis === undefined
    ? running
    : Effect.timeoutOrElse(running, {
        duration: timeoutMillis,
        orElse: () => Effect.fail(new Blocking.TaskTimeoutError({ task: task.name, phase: "running", timeoutMillis }))
      })
}

const cloneReply = (
  task: Blocking.AnyTask,
  reply: Blocking.Reply,
  transfer: ReadonlyArray<Transferable>
): Effect.Effect<Blocking.Reply, Blocking.InvalidResultError> => {
  try {
    return Effect.succeed(structuredClone(reply, { transfer: [...transfer] }))
  } catch (error) {
    return Effect.fail(new Blocking.InvalidResultError({ task: task.name, reason: Codec.describe(error) }))
  }
}

const handlerError = (task: Blocking.AnyTask, thrown: unknown) =>
  new Blocking.HandlerError({
    task: task.name,
    errorName: "Error",
    errorMessage: Codec.describe(thrown),
    remoteStack: undefined
  })
