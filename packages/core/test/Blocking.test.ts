import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Blocking } from "../src/index.ts"
import { blockingSuite } from "./shared/blockingSuite.ts"

blockingSuite("the inline executor", Blocking.layerInline)

describe("Blocking", () => {
  describe("task", () => {
    it.effect("records the module URL it is given", () =>
      Effect.sync(() => {
        const t = Blocking.task({
          module: new URL("file:///tasks.ts"),
          name: "t",
          payload: Schema.Number,
          success: Schema.Number,
          handler: (n) => n
        })
        assert.strictEqual(t.module, "file:///tasks.ts")
        assert.isTrue(Blocking.isTask(t))
        assert.isFalse(Blocking.isTask({ name: "t" }))
      })
    )

    it.effect("throws an InvalidOptionsError naming the timeout when the task's timeout is not positive", () =>
      Effect.sync(() => {
        const define = (timeout: number) => () =>
          Blocking.task({ name: "t", payload: Schema.Number, success: Schema.Number, handler: (n) => n, timeout })
        assert.throws(define(-1), /timeout: must be a finite duration > 0, got -1/)
        assert.throws(define(Number.NaN), /timeout: must be a duration/)
        assert.strictEqual(define(250)().timeoutMillis, 250)
      })
    )
  })

  describe("isBlockingError", () => {
    it.effect("tells the executors' errors from a task's own failures", () =>
      Effect.sync(() => {
        assert.isTrue(Blocking.isBlockingError(new Blocking.QueueFullError({ task: "t", capacity: 1 })))
        assert.isTrue(Blocking.isBlockingError({ _tag: "WorkerDiedError" }))
        assert.isFalse(Blocking.isBlockingError({ _tag: "InvalidOptionsError" }))
        assert.isFalse(Blocking.isBlockingError({ _tag: "NotFound" }))
        assert.isFalse(Blocking.isBlockingError("HandlerError"))
        assert.isFalse(Blocking.isBlockingError(null))
      })
    )
  })
})
