// Well-behaved tasks, in a module of their own: the pool's crash-loop breaker is per module, so
// the hostile module's deaths never refuse these.
import * as Schema from "effect/Schema"
import * as Blocking from "../../packages/core/src/Blocking.ts"

/** Synchronous: doubles `n` after about `millis` of CPU. */
export const double = Blocking.task({
  module: import.meta.url,
  name: "double",
  payload: Schema.Struct({ n: Schema.Number, millis: Schema.Number }),
  success: Schema.Number,
  handler: ({ n, millis }) => {
    const end = performance.now() + millis
    while (performance.now() < end) {}
    return n * 2
  }
})

/** Asynchronous: answers `n` after `millis`, or fails at once when its signal aborts. */
export const wait = Blocking.task({
  module: import.meta.url,
  name: "wait",
  payload: Schema.Struct({ n: Schema.Number, millis: Schema.Number }),
  success: Schema.Number,
  handler: ({ n, millis }, { signal }) =>
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => resolve(n), millis)
      signal.addEventListener("abort", () => {
        clearTimeout(timer)
        reject(new Error("aborted"))
      })
    })
})
