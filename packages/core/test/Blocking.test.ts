import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result, Schema, Tracer } from "effect"
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

// Found by a boundary sweep: a string is an Iterable<string>, so `runAll(shout, "hello")` for a
// task of strings type-checked and ran a task per character; `null` payloads died in
// `Array.from`; options given as a string were dropped without a word.
describe("Blocking.runAll's payloads and options", () => {
  const shout = Blocking.task({
    name: "shout",
    payload: Schema.String,
    success: Schema.String,
    handler: (text) => text.toUpperCase()
  })
  type Rejection = { readonly _tag: string; readonly option: string; readonly reason: string }
  const failure = (effect: Effect.Effect<unknown, unknown, Blocking.BlockingExecutor>) =>
    Effect.flip(effect).pipe(Effect.provide(Blocking.layerInline)) as Effect.Effect<Rejection>

  it.effect("refuses payloads that are a string or not iterable, running nothing, settled or not", () =>
    Effect.gen(function* () {
      for (const [payloads, reason] of [
        ["hello", "must be an iterable of payloads, got a string (write [payload] for one)"],
        [new String("hello"), "must be an iterable of payloads, got a string (write [payload] for one)"],
        [null, "must be an iterable of payloads, got null (write [payload] for one)"],
        [
          { text: "hello" },
          "must be an iterable of payloads, got an object that is not iterable (write [payload] for one)"
        ]
      ] as const) {
        const given = payloads as unknown as Iterable<string>
        for (const batch of [Blocking.runAll(shout, given), Blocking.runAllSettled(shout, given)]) {
          const error = yield* failure(batch)
          assert.strictEqual(error._tag, "InvalidOptionsError")
          assert.strictEqual(error.option, "payloads")
          assert.strictEqual(error.reason, reason)
        }
      }
    })
  )

  it.effect("refuses options that are not an object, for a batch and for a call; null is none", () =>
    Effect.gen(function* () {
      const options = "concurrency: 2" as unknown as Blocking.BatchOptions
      for (const call of [
        Blocking.runAll(shout, ["a"], options),
        Blocking.runAllSettled(shout, ["a"], options),
        Blocking.run(shout, "a", options)
      ]) {
        const error = yield* failure(call)
        assert.strictEqual(error._tag, "InvalidOptionsError")
        assert.strictEqual(error.option, "options")
      }
      const none = null as unknown as Blocking.BatchOptions
      const results = yield* Blocking.runAll(shout, ["a", "b"], none).pipe(Effect.provide(Blocking.layerInline))
      assert.deepStrictEqual(results, ["A", "B"])
    })
  )
})

describe("Blocking.runAll's window", () => {
  /** An executor that answers every submitted call on a later macrotask and counts the most outstanding at once. */
  const counting = () => {
    const seen = { outstanding: 0, most: 0 }
    const layer = Layer.succeed(
      Blocking.BlockingExecutor,
      Blocking.BlockingExecutor.of({
        execute: () => Effect.die("submit only"),
        submit: (request, _clock, receiver) => {
          seen.most = Math.max(seen.most, ++seen.outstanding)
          setTimeout(() => {
            seen.outstanding--
            receiver.succeed({ _tag: "Success", value: request.payload })
          }, 0)
          return undefined
        }
      })
    )
    return { seen, layer }
  }
  const noop = Blocking.task({ name: "noop", payload: Schema.Number, success: Schema.Number, handler: (n) => n })
  const payloads = Array.from({ length: 3000 }, (_, i) => i)

  it.live("keeps 1,024 tasks submitted by default, the given number, or all with unbounded", () =>
    Effect.gen(function* () {
      for (const [concurrency, most] of [
        [undefined, 1024],
        [10, 10],
        ["unbounded", 3000]
      ] as const) {
        const { seen, layer } = counting()
        const results = yield* Blocking.runAll(noop, payloads, { concurrency }).pipe(Effect.provide(layer))
        assert.deepStrictEqual(results, payloads)
        assert.strictEqual(seen.most, most, `concurrency ${concurrency}`)
      }
    })
  )
})

describe("Blocking.runAll's cancellation", () => {
  it.effect("cancels a call whose submit ended the batch before it returned its cancel", () =>
    Effect.gen(function* () {
      // A queue of one that drops its oldest call: a new submit fails the previous one at once,
      // which fails the batch while that new submit has not yet returned.
      const seen = { cancelled: 0, answered: 0 }
      let oldest: Blocking.Receiver | undefined
      const layer = Layer.succeed(
        Blocking.BlockingExecutor,
        Blocking.BlockingExecutor.of({
          execute: () => Effect.die("submit only"),
          submit: (request, _clock, receiver) => {
            const dropped = oldest
            oldest = receiver
            dropped?.fail(new Blocking.QueueFullError({ task: request.task.name, capacity: 1 }))
            let cancelled = false
            setTimeout(() => {
              if (cancelled) return
              seen.answered++
              receiver.succeed({ _tag: "Success", value: request.payload })
            }, 20)
            return () => {
              cancelled = true
              seen.cancelled++
            }
          }
        })
      )
      const noop = Blocking.task({ name: "noop", payload: Schema.Number, success: Schema.Number, handler: (n) => n })
      const exit = yield* Effect.exit(Blocking.runAll(noop, [1, 2], { concurrency: 2 }).pipe(Effect.provide(layer)))
      assert.isTrue(exit._tag === "Failure")
      assert.deepStrictEqual(seen, { cancelled: 1, answered: 0 })
    })
  )
})

describe("Blocking.runAll's tracing", () => {
  it.effect("records no span when tracing is turned off, as Blocking.run does", () =>
    Effect.gen(function* () {
      const names: Array<string> = []
      const tracer = Tracer.make({
        span(options) {
          names.push(options.name)
          return Tracer.nativeTracer.span(options)
        }
      })
      const answer = (request: Blocking.Request) =>
        Blocking.invoke(request.task, request.payload, {
          signal: new AbortController().signal,
          traceId: request.span.traceId,
          spanId: request.span.spanId
        })
      const layer = Layer.succeed(
        Blocking.BlockingExecutor,
        Blocking.BlockingExecutor.of({
          execute: (request) => Effect.promise(async () => answer(request)),
          submit: (request, _clock, receiver) => {
            void Promise.resolve(answer(request)).then((reply) => receiver.succeed(reply))
            return undefined
          }
        })
      )
      const noop = Blocking.task({ name: "noop", payload: Schema.Number, success: Schema.Number, handler: (n) => n })
      const untraced = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        effect.pipe(Effect.withTracerEnabled(false), Effect.withTracer(tracer), Effect.provide(layer))
      assert.strictEqual(yield* untraced(Blocking.run(noop, 1)), 1)
      assert.deepStrictEqual(yield* untraced(Blocking.runAll(noop, [1, 2])), [1, 2])
      assert.deepStrictEqual(yield* untraced(Blocking.runAllSettled(noop, [3])), [Result.succeed(3)])
      assert.deepStrictEqual(names, [])
    })
  )
})
