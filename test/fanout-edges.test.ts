// Fan-out batches at their edges, against real servers: a deadline reached while an origin is
// paused and the consumer takes nothing, a pause that ended while the window is full, an input
// generator left unread. Each case once hung, spun or leaked.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer, Option, Stream } from "effect"
import type { HttpClient } from "effect/http"
import { faultServer } from "./support/faultServer.ts"
import { origin } from "./support/origin.ts"

const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))
// One request at a time per origin, so a 429's Retry-After pauses its origin.
const one = Fanout.adaptive({ min: 1, initial: 1, max: 1 })

describe("Fanout at its edges", () => {
  it.live("a settled stream with no buffer ends after its deadline while a paused origin holds an item back", () =>
    Effect.gen(function* () {
      const paused = yield* faultServer
      const y = yield* faultServer
      const z = yield* faultServer
      // 0 pauses its origin (429, Retry-After: 30), 1 waits behind it; 2 and 3 run past the
      // deadline on other origins and fill the window: they must be reported before 1 is.
      const urls = [`${paused.url}/status?code=429&retryAfter=30`, `${paused.url}/ok`, `${y.url}/hang`, `${z.url}/hang`]
      const options = { concurrency: 2, perHost: one, buffer: 0, deadline: "300 millis" } as const
      const ended = (stream: Stream.Stream<{ readonly index: number }, unknown, HttpClient.HttpClient>) =>
        stream.pipe(
          Stream.runCollect,
          Effect.map((items) => items.map((item) => item.index).sort()),
          Effect.timeoutOption("5 seconds")
        )
      // Every item once, in either form.
      assert.deepStrictEqual(yield* ended(Fanout.streamSettled(urls, options)), Option.some([0, 1, 2, 3]))
      assert.deepStrictEqual(
        yield* ended(Fanout.pipelineSettled(urls, (item) => Effect.succeed(item.index), options)),
        Option.some([0, 1, 2, 3])
      )
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live("after the deadline, a settled stream waiting for a slow consumer does not spin", () =>
    Effect.gen(function* () {
      const paused = yield* faultServer
      const y = yield* faultServer
      // The paused origin's Retry-After is cut at the deadline: no pause can end after it.
      const urls = [
        `${paused.url}/status?code=429&retryAfter=30`,
        ...Array.from({ length: 20 }, (_, i) => `${y.url}/ok?i=${i}`)
      ]
      let deadlineAt = 0
      let eventsAfter = 0
      const out = yield* Fanout.streamSettled(urls, {
        concurrency: 2,
        perHost: one,
        buffer: 0,
        deadline: "200 millis",
        onProgress: (progress) => {
          if (deadlineAt === 0 && progress.done > 0 && progress.inFlight === 0) deadlineAt = performance.now()
          if (deadlineAt > 0) eventsAfter++
        }
      }).pipe(
        Stream.tap(() => Effect.sleep("40 millis")),
        Stream.runCollect
      )
      assert.strictEqual(out.length, 21)
      // One event per item reported late (and a few more); a spin reported thousands.
      assert.isBelow(eventsAfter, 100)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  it.live(
    "workers waiting for a slow consumer after an origin's pause has ended do not spin",
    () =>
      Effect.gen(function* () {
        const paused = yield* faultServer
        const y = yield* faultServer
        // The origin is paused for a second; the pause ends while the window is full (the
        // consumer holds its first item for 2.5 s).
        const urls = [
          `${paused.url}/status?code=429&retryAfter=1`,
          ...Array.from({ length: 4 }, (_, i) => `${y.url}/ok?i=${i}`)
        ]
        let first = true
        const cpu = process.cpuUsage()
        const out = yield* Fanout.streamSettled(urls, { concurrency: 2, perHost: one, buffer: 0 }).pipe(
          Stream.tap(() => {
            if (!first) return Effect.void
            first = false
            return Effect.sleep("2500 millis")
          }),
          Stream.runCollect
        )
        const { user, system } = process.cpuUsage(cpu)
        assert.strictEqual(out.length, 5)
        // Waiting costs next to nothing (~0.2 s of CPU here with the test's own work); the spin
        // took a core for the whole wait.
        assert.isBelow((user + system) / 1000, 1000)
      }).pipe(Effect.scoped, Effect.provide(Live)),
    { timeout: 15_000 }
  )

  it.live("an input generator is closed when the batch ends before reading it to its end", () =>
    Effect.gen(function* () {
      const s = yield* faultServer
      let closed = 0
      function* urls() {
        try {
          for (let i = 0; ; i++) yield `${s.url}/ok?i=${i}`
        } finally {
          closed++
        }
      }
      const out = yield* Fanout.stream(urls(), { concurrency: 2 }).pipe(Stream.take(3), Stream.runCollect)
      assert.strictEqual(out.length, 3)
      assert.strictEqual(closed, 1, "the generator's finally ran once the stream ended")
      // Fail-fast: the first failure ends the batch, and the input with it.
      function* failing() {
        try {
          yield `${s.url}/status?code=404`
          for (let i = 0; ; i++) yield `${s.url}/ok?delay=50&i=${i}`
        } finally {
          closed++
        }
      }
      yield* Effect.flip(Fanout.all(failing(), { concurrency: 2 }))
      assert.strictEqual(closed, 2)
    }).pipe(Effect.scoped, Effect.provide(Live))
  )

  // Neither is a batch, and both are easy slips: a String object iterates its characters as "url"
  // does (and is an Iterable<Input>: under a client that prepends a base URL, each would be a
  // request of its own); a URL object is not iterable (from JavaScript or under a cast, it died with
  // "requests[Symbol.iterator] is not a function").
  for (const [name, lone] of [
    ["a String object", (url: string) => new String(url)],
    ["a lone URL object", (url: string) => new URL(url) as unknown as Iterable<Fanout.Input>]
  ] as const) {
    it.live(`${name} as the requests fails with InvalidOptionsError, sending nothing, in every form`, () =>
      Effect.gen(function* () {
        const server = yield* origin({ "/": (_req, res) => res.end("ok") })
        const url = lone(`${server.url}/`)
        const forms = [
          Fanout.all(url),
          Fanout.allSettled(url),
          Stream.runDrain(Fanout.stream(url)),
          Stream.runDrain(Fanout.streamSettled(url)),
          Stream.runDrain(Fanout.pipeline(url, Effect.succeed)),
          Stream.runDrain(Fanout.pipelineSettled(url, Effect.succeed))
        ]
        for (const form of forms) {
          const exit = yield* Effect.exit(form)
          assert.isTrue(Exit.isFailure(exit) && !Cause.hasDies(exit.cause), String(exit))
          const error = Exit.isFailure(exit)
            ? (Cause.squash(exit.cause) as { _tag?: string; option?: string })
            : undefined
          assert.strictEqual(error?._tag, "InvalidOptionsError")
          assert.strictEqual(error?.option, "requests")
        }
        assert.strictEqual(server.requests(), 0)
      }).pipe(Effect.scoped, Effect.provide(Live))
    )
  }
})
