// Requests that can never be sent (bad header names or values, URLs that are not http(s)),
// through @volley/node's client, with Fanout and with Http.*: typed as invalid input, never
// sent, never retried, and never counted in the retry budget (so they fund no other retries).
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer, Result, Schema } from "effect"
import { type HttpClientError, HttpClientRequest } from "effect/http"
import { type FaultServer, faultServer } from "./support/faultServer.ts"

/** Each unsendable request, with the reason it must fail with. */
const unsendable = (server: FaultServer) =>
  [
    [{ "x-a": "a\r\nb" }, `${server.url}/ok`, "EncodeError"],
    [{ "x-a": "a\u0000b" }, `${server.url}/ok`, "EncodeError"],
    [{ "x-a": "\u20ac" }, `${server.url}/ok`, "EncodeError"], // not latin1
    [{ "x a": "v" }, `${server.url}/ok`, "EncodeError"],
    [{ expect: "100-continue" }, `${server.url}/ok`, "EncodeError"], // undici does not do Expect
    [{}, `ftp://${server.url.slice("http://".length)}/ok`, "InvalidUrlError"],
    [{}, "file:///etc/hosts", "InvalidUrlError"],
    [{}, "data:,hello", "InvalidUrlError"],
    [{}, "javascript:alert(1)", "InvalidUrlError"]
  ] as const

/** `n` requests that fail once with a 503, then succeed (fresh keys per `run`). */
const flaky = (server: FaultServer, run: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${server.url}/flaky?key=${run}-${i}`)

// One retry, no wait, and a budget of half the requests seen (no free retries): with requests
// made one at a time, every second one that fails can be retried, if invalid ones never count.
const client = () =>
  Layer.merge(
    Retry.layer({ retries: 1, jitter: false, baseDelay: 0, budget: { ratio: 0.5, minPerSecond: 0 } }),
    NodeHttpClient.layer()
  )

const reasonOf = (result: Result.Result<unknown, unknown>) =>
  Result.isFailure(result) ? (result.failure as { reason?: { _tag: string } }).reason?._tag : "ok"

describe("requests that can never be sent", () => {
  it.live("Fanout: fail typed, are never sent or retried, and leave the budget to the others", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const alone = yield* Fanout.allSettled(flaky(server, "alone", 10), { concurrency: 1 }).pipe(
        Effect.provide(client())
      )
      const recovered = alone.filter(Result.isSuccess).length
      assert.strictEqual(recovered, 5) // the budget's share, when nothing else counts

      const cases = unsendable(server)
      const invalid = cases.map(([headers, url]) => HttpClientRequest.get(url, { headers }))
      const results = yield* Fanout.allSettled([...invalid, ...flaky(server, "mixed", 10)], { concurrency: 1 }).pipe(
        Effect.provide(client())
      )
      assert.deepStrictEqual(
        results.slice(0, cases.length).map(reasonOf),
        cases.map(([, , reason]) => reason)
      )
      assert.strictEqual(server.requests("/ok"), 0)
      assert.strictEqual(results.slice(cases.length).filter(Result.isSuccess).length, recovered)
    }).pipe(Effect.scoped)
  )

  it.live("Http.*: fail typed, are never sent or retried, and leave the budget to the others", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const resilient = Retry.layerClient.pipe(Layer.provideMerge(client()))
      const getAll = (urls: ReadonlyArray<string>) => Effect.forEach(urls, (url) => Effect.result(Http.getText(url)))
      const alone = yield* getAll(flaky(server, "alone", 10)).pipe(Effect.provide(resilient))
      const recovered = alone.filter(Result.isSuccess).length
      assert.strictEqual(recovered, 5)

      const cases = unsendable(server)
      const mixed = yield* Effect.gen(function* () {
        const exits = yield* Effect.forEach(cases, ([headers, url]) => Effect.exit(Http.getText(url, { headers })))
        const reasons = exits.map((exit) =>
          Exit.isFailure(exit) ? (Cause.squash(exit.cause) as { reason?: { _tag: string } }).reason?._tag : "ok"
        )
        return { reasons, flaky: yield* getAll(flaky(server, "mixed", 10)) }
      }).pipe(Effect.provide(resilient))
      assert.deepStrictEqual(
        mixed.reasons,
        cases.map(([, , reason]) => reason)
      )
      assert.strictEqual(server.requests("/ok"), 0)
      assert.strictEqual(mixed.flaky.filter(Result.isSuccess).length, recovered)
    }).pipe(Effect.scoped)
  )

  // Found by a boundary sweep: from JavaScript or under a cast, `Http.getText(url, null)` and a
  // headers string threw a TypeError out of the call itself, a `null` URL too, and options given
  // as a string were dropped without a word.
  it.live(
    "Http.*: arguments of the wrong type fail typed, naming the argument, not thrown; null options are none",
    () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const url = `${server.url}/ok`
        const calls = (target: unknown, options: unknown) => {
          const u = target as string
          const o = options as Http.RequestOptions
          const S = Schema.Unknown
          return [
            () => Http.getText(u, o),
            () => Http.getBytes(u, o),
            () => Http.getJson(u, S, o),
            () => Http.postText(u, "x", o),
            () => Http.postBytes(u, new Uint8Array(1), o),
            () => Http.postJson(u, { a: 1 }, S, o)
          ] as const
        }
        for (const [target, options, reason, option] of [
          [null, undefined, "InvalidUrlError", "url"],
          [42, {}, "InvalidUrlError", "url"],
          [url, "accept: text/plain", "EncodeError", "options"],
          [url, { headers: "accept: text/plain" }, "EncodeError", "headers"],
          [url, { headers: ["accept", "text/plain"] }, "EncodeError", "headers"],
          [url, { urlParams: "a=1" }, "EncodeError", "urlParams"]
        ] as const) {
          for (const call of calls(target, options)) {
            const exit = yield* Effect.exit(call())
            const error = Exit.isFailure(exit)
              ? (Cause.squash(exit.cause) as HttpClientError.HttpClientError)
              : undefined
            assert.strictEqual(error?.reason._tag, reason, `${String(target)} ${JSON.stringify(options)}`)
            const cause = error?.reason.cause as { _tag?: string; option?: string } | undefined
            assert.strictEqual(cause?._tag, "InvalidOptionsError")
            assert.strictEqual(cause?.option, option)
          }
        }
        // Found by review: a string given for the headers or the options was echoed in the error,
        // a header's value (a token) with it.
        const token = (yield* Effect.flip(
          Http.getText(url, { headers: "Bearer s3cret" } as unknown as Http.RequestOptions)
        )) as HttpClientError.HttpClientError
        assert.strictEqual(
          (token.reason.cause as { message?: string } | undefined)?.message,
          "Invalid option headers: must be an object of header names to values, got a string"
        )
        assert.notInclude(JSON.stringify(token), "s3cret")
        assert.notInclude(String(token), "s3cret")
        assert.strictEqual(server.requests("/ok"), 0)
        // `null` options, headers and urlParams are none, as `undefined` ones are.
        for (const options of [null, { headers: null, urlParams: null }]) {
          assert.strictEqual(yield* Http.getText(url, options as unknown as Http.RequestOptions), "xx")
        }
      }).pipe(Effect.scoped, Effect.provide(client()))
  )

  it.live("a PUT whose Content-Length contradicts its body: an EncodeError, never sent or retried", () =>
    Effect.gen(function* () {
      const server = yield* faultServer
      const request = HttpClientRequest.put(`${server.url}/ok`).pipe(
        HttpClientRequest.bodyText("hello"),
        HttpClientRequest.setHeader("content-length", "3")
      )
      const exit = yield* Effect.exit(Http.send(request, (r) => r.text))
      assert.strictEqual(
        Exit.isFailure(exit) && (Cause.squash(exit.cause) as { reason?: { _tag: string } }).reason?._tag,
        "EncodeError"
      )
      // It was a TransportError, sent again by the retry policy.
      assert.strictEqual(server.requests("/ok"), 0)
    }).pipe(Effect.scoped, Effect.provide(client()))
  )
})
