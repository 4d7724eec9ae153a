// A batch worker on volley's NodeHttpClient sends its items' first attempts one after another
// from a single suspension of its fiber while they succeed, and hands every other outcome to the
// fiber (a failure to retry or report, a body still arriving, a request the client must parse or
// refuses at once). These tests walk one worker through every such turn and check that nothing is
// lost, reordered, sent twice or left in flight.
import { AsyncLocalStorage, createHook } from "node:async_hooks"
import diagnostics from "node:diagnostics_channel"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, HttpBody, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Fiber, Layer, ManagedRuntime, Result, Stream } from "effect"
import { HttpClientRequest, type HttpClientResponse } from "effect/http"
import * as Scheduler from "effect/Scheduler"
import { faultServer } from "./support/faultServer.ts"
import { closedPort, origin } from "./support/origin.ts"

const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))

const decoder = new TextDecoder()
const outcome = (result: Result.Result<Uint8Array, unknown>) =>
  Result.isSuccess(result)
    ? decoder.decode(result.success)
    : ((result.failure as { reason?: { _tag: string } }).reason?._tag ?? "?")

describe("Fanout worker", () => {
  it.live("one worker goes through every kind of outcome in input order, sending each request once", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const host = server.url.slice("http://".length)
      // Refused at once by undici, while the worker's fiber runs or while it is suspended.
      const refused = HttpClientRequest.get(`${server.url}/ok`, { headers: { "x-a": "a\r\nb" } })
      const items = [
        refused,
        ...Array.from({ length: 5 }, (_, i) => `${server.url}/index?i=${i}`),
        `${server.url}/status?code=500`, // a failure: the fiber reports it
        refused,
        `${server.url}/index?i=5`,
        refused,
        `${server.url}/index?i=6`,
        `${server.url}/slow-body?chunks=3&interval=5`, // a body still arriving: the fiber reads it
        `${server.url}/index?i=7`,
        `ftp://${host}/`, // never sent
        `${server.url}/index?i=8`
      ]
      const results = yield* Fanout.allSettled(items, { concurrency: 1 })
      assert.deepStrictEqual(results.map(outcome), [
        "EncodeError",
        "0",
        "1",
        "2",
        "3",
        "4",
        "StatusCodeError",
        "EncodeError",
        "5",
        "EncodeError",
        "6",
        "xxx",
        "7",
        "InvalidUrlError",
        "8"
      ])
      assert.strictEqual(server.requests(), 11)
      assert.strictEqual(server.requests("/ok"), 0)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  for (const maxOps of [3, 4]) {
    it.live(
      `a request failing while the worker's fiber has yielded on its way to wait is reported (${maxOps} ops a slice)`,
      () =>
        Effect.gen(function* () {
          const server = yield* faultServer
          const port = yield* closedPort
          // With so small an op budget the fiber yields to Effect's scheduler just before it waits
          // for its next request, which a refused connection fails before the fiber runs again.
          const items = [`${server.url}/status?code=500`, `http://127.0.0.1:${port}/`, `${server.url}/index?i=1`]
          const results = yield* Fanout.allSettled(items, { concurrency: 1 }).pipe(
            Effect.provideService(Scheduler.MaxOpsBeforeYield, maxOps),
            Effect.timeout("5 seconds")
          )
          assert.deepStrictEqual(results.map(outcome), ["StatusCodeError", "TransportError", "1"])
        }).pipe(Effect.scoped, Effect.provide(Live))
    )
  }

  it.live("workers under a per-host limit keep every result and the limit", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = Array.from({ length: 300 }, (_, i) => `${server.url}/index?i=${i}`)
      const results = yield* Fanout.allSettled(urls, { concurrency: 8, perHost: 3 })
      assert.deepStrictEqual(
        results.map(outcome),
        urls.map((_, i) => String(i))
      )
      assert.strictEqual(server.requests(), 300)
      assert.isAtMost(server.peakInFlight(), 3)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("Http.readText as a batch's read gives what response.text gives, limits included", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = [0, 2, 3000, 70_000].map((size) => `${server.url}/ok?size=${size}`)
      const texts = (read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<string, unknown>) =>
        Fanout.allSettled([...urls, `${server.url}/status?code=404`], { concurrency: 2, read }).pipe(
          Effect.map((results) =>
            results.map((result) =>
              Result.isSuccess(result) ? result.success.length : (result.failure as { message: string }).message
            )
          )
        )
      const own = (response: HttpClientResponse.HttpClientResponse) => response.text
      assert.deepStrictEqual(yield* texts(Http.readText), [0, 2, 3000, 70_000, (yield* texts(own))[4]])
      assert.deepStrictEqual(yield* texts(Http.readText), yield* texts(own))
      // Under a body limit, the same failures.
      const limited = HttpBody.withMaxBodySize(100)
      assert.deepStrictEqual(yield* limited(texts(Http.readText)), yield* limited(texts(own)))
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("workers sending request after request keep every result of a large batch", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = Array.from({ length: 2000 }, (_, i) => `${server.url}/index?i=${i}`)
      const results = yield* Fanout.allSettled(urls, { concurrency: 8 })
      assert.deepStrictEqual(
        results.map(outcome),
        urls.map((_, i) => String(i))
      )
      assert.strictEqual(server.requests(), 2000)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a fail-fast batch that ends while other responses arrive settles none of them after its end", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      // All ten are answered at once, the failure first: it ends the batch while the others'
      // responses have arrived and wait to be handed over.
      const urls = [
        `${server.url}/together?n=10&code=500`,
        ...Array.from({ length: 9 }, (_, i) => `${server.url}/together?n=10&i=${i}`)
      ]
      const events: Array<Fanout.Progress> = []
      const exit = yield* Effect.exit(Fanout.all(urls, { concurrency: 10, onProgress: (p) => events.push(p) }))
      assert.isTrue(Exit.isFailure(exit))
      const ended = events.length
      yield* Effect.sleep("200 millis")
      assert.strictEqual(events.length, ended, "no event after the batch ended")
      assert.strictEqual(events.at(-1)?.inFlight, 0)
      assert.isTrue(events.every((event) => event.inFlight >= 0))
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a batch interrupted from its progress callback sends nothing more", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = [
        ...Array.from({ length: 3 }, (_, i) => `${server.url}/index?i=${i}`),
        ...Array.from({ length: 5 }, (_, i) => `${server.url}/hang?i=${i}`)
      ]
      // Interrupted while the worker settles its third item, between two of its requests.
      let batch: Fiber.Fiber<unknown, unknown> | undefined
      batch = yield* Fanout.allSettled(urls, {
        concurrency: 1,
        onProgress: (progress) => {
          if (progress.done === 3) batch?.interruptUnsafe()
        }
      }).pipe(Effect.forkChild)
      const exit = yield* Fiber.await(batch)
      assert.isTrue(Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause))
      yield* Effect.sleep("100 millis")
      assert.strictEqual(server.requests("/hang"), 0)
      assert.strictEqual(server.inFlight(), 0)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a worker interrupted while another takes a moment to stop sends nothing more", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      // The cancellable item's signal takes 50 ms to stop: the batch does not end at once when
      // the progress callback interrupts it, while the other worker settles its third item.
      const slowSignal = Effect.never.pipe(Effect.onInterrupt(() => Effect.sleep("50 millis")))
      const urls: Array<Fanout.Input> = [
        Fanout.cancellable(`${server.url}/hang?slow`, slowSignal),
        ...Array.from({ length: 3 }, (_, i) => `${server.url}/index?i=${i}`),
        ...Array.from({ length: 5 }, (_, i) => `${server.url}/hang?i=${i}`)
      ]
      let batch: Fiber.Fiber<unknown, unknown> | undefined
      batch = yield* Fanout.allSettled(urls, {
        concurrency: 2,
        onProgress: (progress) => {
          if (progress.done === 3) batch?.interruptUnsafe()
        }
      }).pipe(Effect.forkChild)
      yield* Fiber.await(batch)
      yield* Effect.promise(() => server.noneInFlight()).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(server.requests("/hang"), 1)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a worker's requests and callbacks run in the async context its batch runs in", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const store = new AsyncLocalStorage<string>()
      // What OpenTelemetry's undici instrumentation reads: the store when undici creates a request.
      const created: Array<string> = []
      const onCreate = () => created.push(store.getStore() ?? "none")
      diagnostics.subscribe("undici:request:create", onCreate)
      const progressed: Array<string> = []
      // One client for both batches: the second reuses the first's connections, whose callbacks
      // run in the first's context.
      const runtime = ManagedRuntime.make(Live)
      yield* Effect.addFinalizer(() => Effect.promise(() => runtime.dispose()))
      const batch = (name: string) =>
        Effect.promise(() =>
          store.run(name, () =>
            runtime.runPromise(
              Fanout.allSettled(
                Array.from({ length: 6 }, (_, i) => `${server.url}/index?i=${i}`),
                { concurrency: 2, onProgress: () => progressed.push(store.getStore() ?? "none") }
              )
            )
          )
        )
      const one = yield* batch("one")
      created.length = 0
      progressed.length = 0
      const two = yield* batch("two")
      diagnostics.unsubscribe("undici:request:create", onCreate)
      assert.strictEqual(one.filter(Result.isSuccess).length, 6)
      assert.strictEqual(two.filter(Result.isSuccess).length, 6)
      assert.deepStrictEqual(created, Array(6).fill("two"))
      assert.isTrue(progressed.length > 0 && progressed.every((name) => name === "two"))
    }).pipe(Effect.scoped)
  )

  it.live("a worker's async context ends with the worker, for async_hooks", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const created = new Set<number>()
      const destroyed = new Set<number>()
      const hook = createHook({
        init: (id, type) => {
          if (type === "volley.Fanout.worker") created.add(id)
        },
        destroy: (id) => {
          if (created.has(id)) destroyed.add(id)
        }
      }).enable()
      const urls = Array.from({ length: 40 }, (_, i) => `${server.url}/index?i=${i}`)
      yield* Fanout.allSettled(urls, { concurrency: 4 })
      // Interrupted workers too.
      yield* Fanout.allSettled([...urls, `${server.url}/hang`], { concurrency: 4 }).pipe(
        Effect.timeout("200 millis"),
        Effect.ignore
      )
      // Destroy hooks run after the current tick.
      yield* Effect.sleep("50 millis")
      hook.disable()
      assert.isAtLeast(created.size, 8)
      assert.deepStrictEqual([...destroyed].sort(), [...created].sort())
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a stream whose consumer stops leaves no request in flight and sends none after", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = [
        ...Array.from({ length: 3 }, (_, i) => `${server.url}/index?i=${i}`),
        ...Array.from({ length: 20 }, (_, i) => `${server.url}/hang?i=${i}`)
      ]
      const taken = yield* Fanout.stream(urls, { concurrency: 1 }).pipe(Stream.take(3), Stream.runCollect)
      assert.deepStrictEqual(
        taken.map((item) => item.index),
        [0, 1, 2]
      )
      yield* Effect.promise(() => server.noneInFlight()).pipe(Effect.timeout("5 seconds"))
      const sent = server.requests()
      yield* Effect.sleep("100 millis")
      assert.strictEqual(server.requests(), sent)
      assert.isAtMost(server.requests("/hang"), 1)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live(
    "a read that throws instead of failing ends its batch or call with the defect, and closes a body still arriving",
    () =>
      Effect.gen(function* () {
        const server = yield* origin({
          "/small": (_req, res) => res.end("ok"),
          "/endless": (_req, res) => {
            res.writeHead(200).write("x".repeat(1000))
          }
        })
        const bug = new Error("bug in read")
        const read = (): Effect.Effect<string> => {
          throw bug
        }
        for (const path of ["/small", "/endless"]) {
          const request = HttpClientRequest.get(`${server.url}${path}`)
          for (const run of [
            Fanout.allSettled([request], { read }),
            Fanout.stream([request], { read }).pipe(Stream.runDrain),
            Http.send(request, read)
          ]) {
            const exit = yield* Effect.exit(Effect.timeout(run, "5 seconds"))
            assert.isTrue(Exit.isFailure(exit) && Cause.squash(exit.cause) === bug, `${path}: ${String(exit)}`)
          }
        }
        // The three responses to /endless were aborted, their sockets closed.
        yield* Effect.promise(() => server.closedSockets(3)).pipe(Effect.timeout("5 seconds"))
      }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("a progress callback that throws ends the batch with its defect and leaves nothing in flight", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const urls = [
        ...Array.from({ length: 5 }, (_, i) => `${server.url}/index?i=${i}`),
        ...Array.from({ length: 5 }, (_, i) => `${server.url}/hang?i=${i}`)
      ]
      const boom = new Error("progress callback failed")
      const exit = yield* Effect.exit(
        Fanout.allSettled(urls, {
          concurrency: 1,
          onProgress: (progress) => {
            if (progress.done === 3) throw boom
          }
        })
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assert.strictEqual(Cause.squash(exit.cause), boom)
      yield* Effect.promise(() => server.noneInFlight()).pipe(Effect.timeout("5 seconds"))
      assert.strictEqual(server.requests("/hang"), 0)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )
})
