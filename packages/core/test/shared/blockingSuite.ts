// One behavioural suite for every BlockingExecutor: the inline executor (packages/core) and the
// worker-thread pool (packages/node) must agree on all of it.
import { assert, describe, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, type Layer, Option, Result, Stream } from "effect"
import { HttpClient, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import * as Blocking from "../../src/Blocking.ts"
import * as Fanout from "../../src/Fanout.ts"
import * as Retry from "../../src/Retry.ts"
import * as T from "../fixtures/blockingTasks.ts"

// ES2024's Atomics.waitAsync (Node >= 16); the project's lib is ES2023.
const waitAsync = (
  Atomics as unknown as {
    waitAsync: (
      array: Int32Array,
      index: number,
      value: number,
      timeout: number
    ) => { async: false } | { async: true; value: Promise<string> }
  }
).waitAsync

/** Waits (for real, not on the TestClock) until another thread sets flags[index] to 1. */
export const waitForFlag = (flags: Int32Array, index: number): Effect.Effect<void> =>
  Effect.promise(async () => {
    while (Atomics.load(flags, index) === 0) {
      const wait = waitAsync(flags, index, 0, 5_000)
      if (wait.async) await wait.value
    }
  })

const strange = (kind: T.StrangeError, async: boolean): T.StrangePayload => ({ kind, async })

export const blockingSuite = (name: string, executor: Layer.Layer<Blocking.BlockingExecutor, unknown>) => {
  // One executor for the whole suite (a pool starts threads once), with one TestClock.
  layer(executor as Layer.Layer<Blocking.BlockingExecutor>)(`Blocking on ${name}`, (it) => {
    describe("run", () => {
      it.effect("returns the handler's result", () =>
        Effect.gen(function* () {
          assert.strictEqual(yield* Blocking.run(T.square, 7), 49)
          assert.strictEqual(yield* Blocking.run(T.later, "abc"), "ABC")
        })
      )

      it.effect("fails with the task's typed failure when the handler throws it", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(T.square, -2))
          assert.instanceOf(error, T.Negative)
          assert.strictEqual(error._tag === "Negative" && error.value, -2)
        })
      )

      it.effect("fails with HandlerError keeping the remote name, message and stack when the handler throws", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(T.explode, "kaboom"))
          assert.strictEqual(error._tag, "HandlerError")
          if (error._tag !== "HandlerError") return
          assert.strictEqual(error.errorName, "RangeError")
          assert.strictEqual(error.errorMessage, "kaboom")
          assert.include(error.remoteStack, "blockingTasks.ts")
          assert.include(error.message, "explode threw RangeError: kaboom")
        })
      )

      // Found by review: V8's `stack` leaves out an Error's `cause` and an AggregateError's `errors`,
      // and only the stack crossed the boundary: `new Error("query failed", { cause })` lost why.
      it.effect(
        "keeps what a thrown Error wraps (its cause chain, an AggregateError's errors) in the remote stack",
        () =>
          Effect.gen(function* () {
            const error = yield* Effect.flip(Blocking.run(T.explodeWrapped, undefined))
            assert.strictEqual(error._tag, "HandlerError")
            if (error._tag !== "HandlerError") return
            assert.strictEqual(error.errorMessage, "download failed")
            const lines = (error.remoteStack ?? "").split("\n").filter((line) => line.startsWith("Caused by"))
            assert.deepStrictEqual(lines, [
              "Caused by: Error: retries exhausted",
              "Caused by: AggregateError: all mirrors failed",
              "Caused by (errors[0]): TypeError: first mirror down",
              "Caused by (errors[1]): second mirror down"
            ])
          })
      )

      it.effect("fails with HandlerError showing a thrown plain object one level deep, not [object Object]", () =>
        Effect.gen(function* () {
          for (const async of [false, true]) {
            const error = yield* Effect.flip(Blocking.run(T.throwObject, { async }).pipe(Effect.timeout("5 seconds")))
            assert.deepStrictEqual(
              error._tag === "HandlerError" && [error.errorName, error.errorMessage],
              ["object", "{ code: 1, fn: [function fn], big: 2n }"],
              `async: ${async}`
            )
          }
        })
      )

      it.effect(
        "fails with HandlerError naming a thrown object's bulky values by kind and size, reading none of them",
        () =>
          Effect.gen(function* () {
            const error = yield* Effect.flip(
              Blocking.run(T.throwBulkyObject, undefined).pipe(Effect.timeout("5 seconds"))
            )
            assert.deepStrictEqual(
              error._tag === "HandlerError" && error.errorMessage,
              "{ code: 1, pixels: [Uint8Array of 1000000 bytes], file: [Uint8Array of 1000000 bytes], seen: [Map of 1], " +
                "rows: [Array of 1000000], self: [object Object] }"
            )
            const bytes = yield* Effect.flip(Blocking.run(T.throwBytes, undefined).pipe(Effect.timeout("5 seconds")))
            assert.deepStrictEqual(bytes._tag === "HandlerError" && bytes.errorMessage, "[Uint8Array of 1000000 bytes]")
          })
      )

      it.effect("fails with HandlerError when the handler throws something String() cannot describe", () =>
        Effect.gen(function* () {
          for (const async of [false, true]) {
            const error = yield* Effect.flip(Blocking.run(T.throwOddity, { async }).pipe(Effect.timeout("5 seconds")))
            assert.strictEqual(error._tag === "HandlerError" && error.errorName, "object", `async: ${async}`)
          }
        })
      )

      it.effect("fails with HandlerError, with string fields, when the handler throws an Error it cannot read", () =>
        Effect.gen(function* () {
          for (const kind of T.strangeErrors) {
            for (const async of [false, true]) {
              const exit = yield* Effect.exit(
                Blocking.run(T.throwStrange, strange(kind, async)).pipe(Effect.timeout("5 seconds"))
              )
              const label = `${kind}, async: ${async}`
              assert.isTrue(Exit.isFailure(exit), label)
              if (!Exit.isFailure(exit)) continue
              const error = Cause.findErrorOption(exit.cause)
              assert.isTrue(Option.isSome(error), `${label}: a typed failure, not ${Cause.pretty(exit.cause)}`)
              if (Option.isNone(error)) continue
              assert.instanceOf(error.value, Blocking.HandlerError, label)
              if (!(error.value instanceof Blocking.HandlerError)) continue
              assert.isString(error.value.errorName, label)
              assert.isString(error.value.errorMessage, label)
              assert.isTrue(error.value.remoteStack === undefined || typeof error.value.remoteStack === "string", label)
              assert.include(error.value.message, "throwStrange threw", label)
            }
          }
          const callSites = yield* Effect.flip(Blocking.run(T.throwStrange, strange("stack of call sites", false)))
          assert.strictEqual(callSites._tag === "HandlerError" && callSites.errorMessage, "with call sites")
          assert.include(callSites._tag === "HandlerError" ? callSites.remoteStack : "", "blockingTasks.ts")
          const objectMessage = yield* Effect.flip(Blocking.run(T.throwStrange, strange("object message", false)))
          assert.strictEqual(
            objectMessage._tag === "HandlerError" && objectMessage.errorMessage,
            '{ text: "not a string" }'
          )
          const named = yield* Effect.flip(Blocking.run(T.throwStrange, strange("numeric name", false)))
          assert.strictEqual(named._tag === "HandlerError" && named.errorName, "42")
          assert.strictEqual(yield* Blocking.run(T.square, 3), 9, "the executor keeps working")
        })
      )

      it.effect("Fanout.pipelineSettled settles every item when a stage's handler throws an Error it cannot read", () =>
        Effect.gen(function* () {
          // Each body names what the stage's handler throws; "fine" bodies are squared.
          const client = HttpClient.make((request, url) =>
            Effect.succeed(HttpClientResponse.fromWeb(request, new Response(decodeURIComponent(url.pathname.slice(1)))))
          )
          const kinds = ["fine", ...T.strangeErrors, "fine"]
          const stage = (item: Fanout.Item<string>) =>
            item.value === "fine"
              ? Blocking.run(T.square, 2)
              : Blocking.run(T.throwStrange, strange(item.value as T.StrangeError, false))
          const outcomes: ReadonlyArray<unknown> = yield* Fanout.pipelineSettled(
            kinds.map((kind) => `http://bodies.test/${encodeURIComponent(kind)}`),
            stage,
            { concurrency: 2, ordered: true, read: (response) => response.text }
          ).pipe(
            Stream.map((item) => (Result.isSuccess(item.result) ? item.result.success : item.result.failure._tag)),
            Stream.runCollect,
            Effect.provideService(HttpClient.HttpClient, client),
            Effect.provide(Retry.layer({ retries: 0 }))
          )
          assert.deepStrictEqual(outcomes, [4, ...T.strangeErrors.map(() => "HandlerError"), 4])
        })
      )

      it.effect("rejects a per-call timeout that is not a positive duration with InvalidOptionsError", () =>
        Effect.gen(function* () {
          const nan = yield* Effect.flip(Blocking.run(T.square, 2, { timeout: Number.NaN }))
          assert.strictEqual(nan._tag === "InvalidOptionsError" && nan.option, "timeout")
          const negative = yield* Effect.flip(Blocking.run(T.square, 2, { queueTimeout: -1 }))
          assert.strictEqual(negative._tag === "InvalidOptionsError" && negative.option, "queueTimeout")
          assert.strictEqual(yield* Blocking.run(T.square, 3, { timeout: "5 seconds" }), 9)
        })
      )

      it.effect("rejects a payload that does not match its Schema before sending it", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(T.square, "seven" as unknown as number))
          assert.strictEqual(error._tag, "InvalidPayloadError")
          assert.include(error.message, "square")
        })
      )

      it.effect("rejects a payload holding a function or a symbol with InvalidPayloadError", () =>
        Effect.gen(function* () {
          for (const bad of [{ f: () => 1 }, Symbol("s")]) {
            const error = yield* Effect.flip(Blocking.run(T.echo, bad))
            assert.strictEqual(error._tag, "InvalidPayloadError")
            assert.include(error.message, "could not be cloned")
          }
          assert.deepStrictEqual(yield* Blocking.run(T.echo, { ok: [1, 2] }), { ok: [1, 2] })
        })
      )

      it.effect("fails with InvalidResultError when the result does not match the success Schema", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(T.liar, undefined))
          assert.strictEqual(error._tag, "InvalidResultError")
          assert.include(error.message, "Expected number")
        })
      )

      it.effect("fails with InvalidResultError when the result cannot be sent back", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.run(T.unsendable, undefined))
          assert.strictEqual(error._tag, "InvalidResultError")
          assert.include(error.message, "could not be cloned")
        })
      )

      it.effect(
        "fails with InvalidResultError when the result cannot be inspected (revoked Proxy, throwing then)",
        () =>
          Effect.gen(function* () {
            for (const kind of ["revoked proxy", "then getter throws"] as const) {
              const error = yield* Effect.flip(Blocking.run(T.returnTrap, kind))
              assert.strictEqual(error._tag, "InvalidResultError", kind)
            }
          })
      )

      it.effect("fails with InvalidPayloadError / InvalidResultError when a transfer function throws", () =>
        Effect.gen(function* () {
          const payload = yield* Effect.flip(Blocking.run(T.badTransfer, "payload"))
          assert.strictEqual(payload._tag, "InvalidPayloadError")
          assert.include(payload.message, "no payload buffer to move")
          for (const handler of ["sync", "async"] as const) {
            const error = yield* Effect.flip(Blocking.run(T.badTransfer, handler))
            assert.strictEqual(error._tag, "InvalidResultError")
            assert.include(error.message, "no result buffer to move")
          }
          assert.strictEqual(yield* Blocking.run(T.square, 3), 9)
        })
      )

      // Found by review: the pool iterated the list in its dispatch round, outside any try: a
      // transfer.payload returning a bare buffer threw there, uncaught, and ended the process.
      it.effect("fails with InvalidPayloadError when transfer.payload returns no array", () =>
        Effect.gen(function* () {
          const bytes = new Uint8Array(4)
          const error = yield* Effect.flip(Blocking.run(T.bareTransfer, bytes))
          assert.strictEqual(error._tag, "InvalidPayloadError", String(error))
          assert.include(error.message, "transfer.payload must return an array")
          assert.strictEqual(bytes.byteLength, 4, "nothing was moved")
          assert.strictEqual(yield* Blocking.run(T.square, 3), 9)
        })
      )

      it.effect("says what a payload schema's transformation threw", () =>
        Effect.gen(function* () {
          assert.strictEqual(yield* Blocking.run(T.throwingSchema, "fine"), "fine")
          const error = yield* Effect.flip(Blocking.run(T.throwingSchema, "throw"))
          assert.strictEqual(error._tag, "InvalidPayloadError")
          assert.include(error.message, "the transformation threw")
        })
      )

      it.effect(
        "fails with InvalidResultError when the result's transfer list cannot be moved, alone or in a batch",
        () =>
          Effect.gen(function* () {
            for (const which of ["duplicate", "number"] as const) {
              const error = yield* Effect.flip(Blocking.run(T.wrongTransferList, which))
              assert.strictEqual(error._tag, "InvalidResultError", `${which}: ${String(error)}`)
            }
            // Beside results that can be moved, only the one that cannot fails.
            const settled = yield* Blocking.runAllSettled(T.wrongTransferList, [
              "fine",
              "duplicate",
              "fine",
              "number"
            ] as const)
            assert.deepStrictEqual(
              settled.map((r) => (Result.isSuccess(r) ? r.success[0] : r.failure._tag)),
              [2, "InvalidResultError", 2, "InvalidResultError"]
            )
          })
      )

      it.effect("moves transferred buffers instead of copying them", () =>
        Effect.gen(function* () {
          const bytes = new Uint8Array([1, 2, 3])
          const reversed = yield* Blocking.run(T.reverse, bytes)
          assert.deepStrictEqual([...reversed], [3, 2, 1])
          assert.strictEqual(bytes.byteLength, 0, "the caller's buffer was detached, not copied")
        })
      )

      it.effect("aborts the handler's signal when the caller is interrupted", () =>
        Effect.gen(function* () {
          const shared = new SharedArrayBuffer(8)
          const flags = new Int32Array(shared)
          const fiber = yield* Effect.forkChild(Blocking.run(T.waitForAbort, shared))
          yield* waitForFlag(flags, 0)
          yield* Fiber.interrupt(fiber)
          yield* waitForFlag(flags, 1)
          assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(fiber)))
        })
      )

      it.effect("fails with TaskTimeoutError and aborts the handler when it runs past its timeout", () =>
        Effect.gen(function* () {
          const shared = new SharedArrayBuffer(8)
          const flags = new Int32Array(shared)
          const fiber = yield* Effect.forkChild(Blocking.run(T.waitForAbort, shared, { timeout: "2 seconds" }))
          yield* waitForFlag(flags, 0)
          yield* TestClock.adjust("1999 millis")
          assert.strictEqual(Atomics.load(flags, 1), 0)
          yield* TestClock.adjust("1 millis")
          const error = yield* Effect.flip(Fiber.join(fiber))
          assert.strictEqual(error._tag, "TaskTimeoutError")
          assert.strictEqual(error._tag === "TaskTimeoutError" && error.phase, "running")
          yield* waitForFlag(flags, 1)
        })
      )

      it.effect("continues the caller's trace inside the handler", () =>
        Effect.gen(function* () {
          const outer = yield* Effect.currentSpan
          const seen = yield* Blocking.run(T.whoCalls, undefined)
          assert.strictEqual(seen.traceId, outer.traceId)
          assert.isString(seen.spanId)
          assert.notStrictEqual(seen.spanId, outer.spanId)
        }).pipe(Effect.withSpan("caller"))
      )

      it.effect("runs many tasks concurrently from Stream.mapEffect, keeping results and order", () =>
        Effect.gen(function* () {
          const squares = yield* Stream.range(1, 200).pipe(
            Stream.mapEffect((n) => Blocking.run(T.square, n), { concurrency: 16 }),
            Stream.runCollect
          )
          assert.deepStrictEqual(
            squares,
            Array.from({ length: 200 }, (_, i) => (i + 1) ** 2)
          )
        })
      )

      it.effect("keeps working after every kind of failure", () =>
        Effect.gen(function* () {
          yield* Effect.flip(Blocking.run(T.explode, "x"))
          yield* Effect.flip(Blocking.run(T.liar, undefined))
          yield* Effect.flip(Blocking.run(T.echo, () => 1))
          yield* Effect.flip(Blocking.run(T.square, -1))
          assert.strictEqual(yield* Blocking.run(T.square, 3), 9)
        })
      )
    })

    describe("runAll / runAllSettled", () => {
      it.effect("run every payload and keep input order, all at once or in a window", () =>
        Effect.gen(function* () {
          const words = Array.from({ length: 100 }, (_, i) => `w${i}`)
          assert.deepStrictEqual(
            yield* Blocking.runAll(T.later, words),
            words.map((w) => w.toUpperCase())
          )
          const ns = Array.from({ length: 300 }, (_, i) => i)
          assert.deepStrictEqual(
            yield* Blocking.runAll(T.square, ns, { concurrency: 7 }),
            ns.map((n) => n * n)
          )
          // More than one slice of submissions (2,048).
          const many = Array.from({ length: 5000 }, (_, i) => i)
          assert.deepStrictEqual(yield* Blocking.runAll(T.noop, many), many)
          assert.deepStrictEqual(yield* Blocking.runAll(T.square, []), [])
        })
      )

      it.effect("keep at most `concurrency` tasks submitted at once", () =>
        Effect.gen(function* () {
          const shared = new SharedArrayBuffer(8)
          yield* Blocking.runAll(
            T.track,
            Array.from({ length: 12 }, () => shared),
            { concurrency: 1 }
          )
          assert.strictEqual(new Int32Array(shared)[1], 1)
        })
      )

      it.effect("runAll fails with the first failure", () =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(Blocking.runAll(T.square, [1, -2, 3, -4]))
          assert.instanceOf(error, T.Negative)
          const invalid = yield* Effect.flip(Blocking.runAll(T.square, [1, "x" as unknown as number]))
          assert.strictEqual(invalid._tag, "InvalidPayloadError")
        })
      )

      it.effect("runAllSettled keeps every outcome, failures and invalid payloads in their Result", () =>
        Effect.gen(function* () {
          const results = yield* Blocking.runAllSettled(T.square, [3, -2, "x" as unknown as number, 4])
          assert.deepStrictEqual(results[0], Result.succeed(9))
          assert.deepStrictEqual(results[3], Result.succeed(16))
          const failures = results.map((r) => (Result.isFailure(r) ? r.failure._tag : "ok"))
          assert.deepStrictEqual(failures, ["ok", "Negative", "InvalidPayloadError", "ok"])
        })
      )

      it.effect("interrupting the batch aborts the tasks it runs", () =>
        Effect.gen(function* () {
          const shared = new SharedArrayBuffer(8)
          const flags = new Int32Array(shared)
          const fiber = yield* Effect.forkChild(Blocking.runAll(T.waitForAbort, [shared]))
          yield* waitForFlag(flags, 0)
          yield* Fiber.interrupt(fiber)
          yield* waitForFlag(flags, 1)
          assert.isTrue(Exit.hasInterrupts(yield* Fiber.await(fiber)))
        })
      )

      it.effect("reject a concurrency that is not an integer >= 1 with InvalidOptionsError", () =>
        Effect.gen(function* () {
          for (const concurrency of [0, -1, 1.5, Number.NaN]) {
            const error = yield* Effect.flip(Blocking.runAll(T.square, [1], { concurrency }))
            assert.strictEqual(error._tag, "InvalidOptionsError", `concurrency ${concurrency}`)
          }
        })
      )

      it.effect("continue the caller's trace in every task", () =>
        Effect.gen(function* () {
          const outer = yield* Effect.currentSpan
          const seen = yield* Blocking.runAll(T.whoCalls, [undefined, undefined])
          for (const { traceId, spanId } of seen) {
            assert.strictEqual(traceId, outer.traceId)
            assert.notStrictEqual(spanId, outer.spanId)
          }
        }).pipe(Effect.withSpan("caller"))
      )
    })
  })
}
