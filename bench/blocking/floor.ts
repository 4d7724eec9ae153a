// The Effect floor under volley's pool: `Blocking.run` on an executor that runs no thread. It
// answers each call with its payload, 128 calls per macrotask, as a pool's batch of results
// would. What a no-op costs here (a fiber per call in Effect.forEach, the payload and result
// codecs, the call's span) no executor can go below; the pool's cost is what it adds on top.
import * as Blocking from "@volley/core/Blocking"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const BATCH = 128

export const layer: Layer.Layer<Blocking.BlockingExecutor> = Layer.sync(Blocking.BlockingExecutor, () => {
  const requests: Array<Blocking.Request> = []
  const receivers: Array<Blocking.Receiver> = []
  let head = 0
  let scheduled = false
  const answer = () => {
    const end = Math.min(requests.length, head + BATCH)
    for (; head < end; head++) {
      const request = requests[head]!
      // As the pool does when a thread takes a call: its span is opened then.
      request.span.attribute("volley.blocking.thread_id", 0)
      receivers[head]!.succeed({ _tag: "Success", value: request.payload })
    }
    if (head < requests.length) setImmediate(answer)
    else {
      requests.length = 0
      receivers.length = 0
      head = 0
      scheduled = false
    }
  }
  return Blocking.BlockingExecutor.of({
    execute: () => Effect.die("the floor executor takes calls through submit only"),
    submit: (request, _clock, receiver) => {
      requests.push(request)
      receivers.push(receiver)
      if (!scheduled) {
        scheduled = true
        setImmediate(answer)
      }
      return undefined
    }
  })
})
