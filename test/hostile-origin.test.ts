// Bodies that would cost memory if read: a 1 GiB gzip bomb, an endless 503, a small 503 that
// inflates to 60 MiB. maxBodySize (counted after decoding) and the capped error-body drain keep
// the process's resident memory flat; the server sees its connection closed.
import { assert, describe, it } from "@effect/vitest"
import { Http, HttpBody, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer, Stream } from "effect"
import { HttpClient } from "effect/http"
import { BOMB_DECODED, FLUSHED, hostileOrigin, RANDOM } from "./support/hostileOrigin.ts"

const MiB = 1024 * 1024
const Live = Layer.merge(NodeHttpClient.layer(), Retry.layer({ retries: 0 }))

// Runs `effect` while sampling RSS every 5 ms; returns its exit and the peak growth in MiB.
const peakRss = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const before = process.memoryUsage.rss()
    let peak = before
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage.rss())
    }, 5)
    const exit = yield* Effect.exit(effect).pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
    peak = Math.max(peak, process.memoryUsage.rss())
    return { exit, growthMiB: (peak - before) / MiB }
  })

const failure = (exit: Exit.Exit<unknown, unknown>) =>
  Exit.isFailure(exit) ? (Cause.squash(exit.cause) as Error & { reason?: { _tag: string } }) : undefined

describe("a hostile origin", () => {
  it.live("a 1 GiB gzip bomb fails fast with BodyTooLargeError past maxBodySize, and its socket is closed", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const { exit, growthMiB } = yield* peakRss(
        Http.getBytes(`${origin.url}/bomb`).pipe(HttpBody.withMaxBodySize(16 * MiB))
      )
      assert.isTrue(HttpBody.isBodyTooLarge(failure(exit)), String(failure(exit)))
      // The server sees the connection close (the test times out otherwise).
      yield* Effect.promise(() => origin.closedAfter("/bomb"))
      assert.isBelow(growthMiB, 128, `RSS grew ${growthMiB.toFixed(1)} MiB`)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )

  // Found by review: maxBodySize counted decoded bytes only, so a body of empty gzip members
  // (decoding to nothing) was read to its end, however long it came.
  it.live("a body of gzip padding that decodes to nothing fails past maxBodySize's wire bound, its socket closed", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const exit = yield* Effect.exit(Http.getBytes(`${origin.url}/padding`).pipe(HttpBody.withMaxBodySize(MiB)))
      assert.isTrue(HttpBody.isBodyTooLarge(failure(exit)), String(failure(exit)))
      const written = yield* Effect.promise(() => origin.closedAfter("/padding"))
      assert.isBelow(written, 64 * MiB, "the server was stopped long before its gigabyte")
      // What an encoder adds to data it cannot compress stays within the bound: 1 MiB of random
      // bytes, larger on the wire than decoded, reads in full under a limit of 1 MiB.
      const random = yield* Http.getBytes(`${origin.url}/random`).pipe(HttpBody.withMaxBodySize(MiB))
      assert.deepStrictEqual(Buffer.from(random), RANDOM)
      // Nor does a stream flushed after every small event (1.22 wire bytes a decoded byte) under a
      // limit it keeps to: the first bound (a 64th over the limit) failed it at ~0.84 of its limit.
      const events = yield* Http.getBytes(`${origin.url}/events`).pipe(HttpBody.withMaxBodySize(FLUSHED.bytes))
      assert.strictEqual(events.byteLength, FLUSHED.bytes)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )

  // Found by review: the wire bound applies from the read's start, and an unread body of padding
  // (decoding to nothing, so never paused by the reader's backpressure, as other bodies are) was
  // read on at wire speed, 100 MiB a second, until a read started or the response was collected.
  it.live("an unread body of gzip padding pauses its wire as an unread plain body does", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const client = yield* HttpClient.HttpClient
      const response = yield* client.get(`${origin.url}/padding`)
      yield* Effect.sleep(1000)
      const exit = yield* Effect.exit(response.arrayBuffer.pipe(HttpBody.withMaxBodySize(MiB)))
      assert.isTrue(HttpBody.isBodyTooLarge(failure(exit)), String(failure(exit)))
      const written = yield* Effect.promise(() => origin.closedAfter("/padding"))
      // Socket buffers' worth, not what a second at wire speed takes.
      assert.isBelow(written, 32 * MiB, `${(written / MiB).toFixed(1)} MiB written while unread`)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )

  it.live("the bomb streamed without a limit is never buffered: 256 MiB decoded in flat memory", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const client = yield* HttpClient.HttpClient
      const { exit, growthMiB } = yield* peakRss(
        client.get(`${origin.url}/bomb`).pipe(
          Effect.flatMap((response) =>
            response.stream.pipe(
              Stream.scan(
                () => 0,
                (bytes: number, chunk: Uint8Array) => bytes + chunk.length
              ),
              Stream.takeUntil((bytes) => bytes >= 256 * MiB),
              Stream.runLast
            )
          )
        )
      )
      assert.isTrue(Exit.isSuccess(exit), String(failure(exit)))
      const decoded = Exit.isSuccess(exit) ? exit.value : undefined
      assert.isAtLeast(decoded?._tag === "Some" ? decoded.value : 0, 256 * MiB)
      assert.isBelow(256 * MiB, BOMB_DECODED)
      // Stopping the stream early closes the connection.
      yield* Effect.promise(() => origin.closedAfter("/bomb"))
      assert.isBelow(growthMiB, 128, `RSS grew ${growthMiB.toFixed(1)} MiB`)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )

  it.live("an endless 503 is a StatusCodeError at once, its body not read, its socket closed", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const { exit, growthMiB } = yield* peakRss(Http.getText(`${origin.url}/endless-503`))
      assert.strictEqual(failure(exit)?.reason?._tag, "StatusCodeError")
      const written = yield* Effect.promise(() => origin.closedAfter("/endless-503"))
      assert.isBelow(written, 8 * 1024 * MiB, "the server was stopped before its bound")
      assert.isBelow(growthMiB, 128, `RSS grew ${growthMiB.toFixed(1)} MiB`)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )

  it.live("a 503 announced small that inflates to 60 MiB is drained only up to 64 KiB decoded", () =>
    Effect.gen(function* () {
      const origin = yield* hostileOrigin
      const { exit, growthMiB } = yield* peakRss(Http.getText(`${origin.url}/bomb-503`))
      const error = failure(exit)
      assert.strictEqual(error?.reason?._tag, "StatusCodeError")
      assert.include(error?.message, `503`)
      // Read in full, the 60 MiB would be buffered and then joined into one more copy.
      assert.isBelow(growthMiB, 48, `RSS grew ${growthMiB.toFixed(1)} MiB`)
    }).pipe(Effect.provide(Live), Effect.scoped)
  )
})
