// Typed reads in batches: `Fanout.json(schema)` as the `read` of every batch form, against a
// real node:http origin through @volley/node's client. Decode failures are per item, typed, and
// name the request and the schema's issue.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Context, Effect, Result, Schema, SchemaGetter, Stream } from "effect"
import type { HttpClientError } from "effect/http"
import { origin } from "./support/origin.ts"

const User = Schema.Struct({ id: Schema.Number, name: Schema.String })
// A transformation: the wire has a string, the value is a number.
const Count = Schema.Struct({ count: Schema.FiniteFromString })

const json = (body: string) => (_req: unknown, res: import("node:http").ServerResponse) =>
  res.writeHead(200, { "content-type": "application/json" }).end(body)

const routes = {
  "/users/1": json('{"id":1,"name":"Ada"}'),
  "/users/2": json('{"id":2,"name":"Grace"}'),
  "/users/3": json('{"id":3,"name":"Barbara"}'),
  "/mismatch": json('{"id":"four","name":"Edsger"}'),
  "/not-json": json("{this is not json"),
  "/count": json('{"count":"42"}'),
  "/gone": (_req: unknown, res: import("node:http").ServerResponse) => res.writeHead(404).end("gone")
}

// With a Content-Length a small body arrives whole with its response: NodeHttpClient decodes it
// at once (the read's synchronous form); chunked, it is handed over first and the read's effect
// decodes it. Both must give the same result.
const sized = (body: string) => (_req: unknown, res: import("node:http").ServerResponse) =>
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body)

const bodies = [
  '{"id":1,"name":"Ada"}',
  '{"id":2,"name":"Grace","extra":[1,2,3]}',
  '{"id":"four","name":"Edsger"}',
  '{"id":5}',
  "{this is not json",
  "",
  "null",
  "[]",
  '{"id":1e400,"name":"big"}',
  '{"id":6,"name":"\u00e9\ud83d\ude00"}',
  '{"count":"42"}',
  '{"count":"forty-two"}'
]

/** An outcome as plain data: the value, or the error's reason, description and cause. */
const outcomeOf = (result: Result.Result<unknown, unknown>) => {
  if (Result.isSuccess(result)) return { value: result.success }
  const failure = result.failure as HttpClientError.HttpClientError
  const reason = failure.reason as { _tag: string; description?: string; cause?: unknown }
  return {
    reason: reason._tag,
    description: reason.description?.replaceAll(/\/(chunked|sized)\//g, "/"),
    cause: (reason.cause as { _tag?: string } | undefined)?._tag ?? (reason.cause as Error | undefined)?.name
  }
}

// A reference, not a service: decoding outside the caller's context would not fail, it would
// quietly use the default.
const Offset = Context.Reference<number>("test/Offset", { defaultValue: () => 0 })
// Decoding reads the caller's context: a body's number plus the caller's offset.
const Shifted = Schema.Struct({
  id: Schema.Number.pipe(
    Schema.decodeTo(Schema.Number, {
      decode: SchemaGetter.transformEffect((n: number) => Effect.map(Effect.service(Offset), (offset) => n + offset)),
      encode: SchemaGetter.transform((n: number) => n)
    })
  )
})
// Decoding takes time: it cannot run without suspending.
const Slow = Schema.Struct({
  id: Schema.Number.pipe(
    Schema.decodeTo(Schema.Number, {
      decode: SchemaGetter.transformEffect((n: number) => Effect.as(Effect.sleep("1 millis"), n * 2)),
      encode: SchemaGetter.transform((n: number) => n)
    })
  )
})

const decodeFailure = (result: Result.Result<unknown, unknown> | undefined): HttpClientError.HttpClientError => {
  assert.isTrue(result !== undefined && Result.isFailure(result))
  const failure = (result as Result.Failure<unknown, HttpClientError.HttpClientError>).failure
  assert.strictEqual(failure._tag, "HttpClientError")
  assert.strictEqual(failure.reason._tag, "DecodeError")
  return failure
}

describe("Fanout.json", () => {
  it.live("decodes every body to the schema's type, in input order (all)", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const users = yield* Fanout.all(
        [3, 1, 2].map((id) => `${server.url}/users/${id}`),
        { read: Fanout.json(User) }
      )
      // Typed: `users` is Array<{ id: number; name: string }>.
      assert.deepStrictEqual(
        users.map((user) => `${user.id}:${user.name}`),
        ["3:Barbara", "1:Ada", "2:Grace"]
      )
      const [count] = yield* Fanout.all([`${server.url}/count`], { read: Fanout.json(Count) })
      assert.strictEqual(count!.count, 42)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("fails only the items whose body is not JSON or does not match, naming the URL and the issue", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const urls = ["/users/1", "/mismatch", "/not-json", "/gone", "/users/2"].map((path) => `${server.url}${path}`)
      const results = yield* Fanout.allSettled(urls, { read: Fanout.json(User) })
      assert.deepStrictEqual(results[0], Result.succeed({ id: 1, name: "Ada" }))
      assert.deepStrictEqual(results[4], Result.succeed({ id: 2, name: "Grace" }))
      const mismatch = decodeFailure(results[1])
      assert.include(mismatch.message, `GET ${server.url}/mismatch`)
      assert.include(mismatch.message, "body does not match the schema")
      assert.include(mismatch.message, '["id"]') // where the schema's issue is
      assert.strictEqual((mismatch.reason.cause as { _tag?: string })._tag, "SchemaError")
      const notJson = decodeFailure(results[2])
      assert.include(notJson.message, `GET ${server.url}/not-json`)
      // The parser's issue, in the message too (it said only "Decode error").
      assert.include(notJson.message, "body is not JSON")
      assert.instanceOf(notJson.reason.cause, SyntaxError)
      const gone = results[3]!
      assert.isTrue(Result.isFailure(gone) && gone.failure._tag === "HttpClientError")
      assert.strictEqual(
        (gone as Result.Failure<unknown, HttpClientError.HttpClientError>).failure.reason._tag,
        "StatusCodeError"
      )
      // Nothing was retried: a body that does not decode would not decode the second time.
      assert.strictEqual(server.requests(), 5)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("is the read of the stream and pipeline forms too", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const urls = ["/users/1", "/mismatch", "/users/3"].map((path) => `${server.url}${path}`)
      const settled = yield* Fanout.streamSettled(urls, { read: Fanout.json(User), ordered: true }).pipe(
        Stream.runCollect
      )
      assert.deepStrictEqual(
        settled.map((item) => (Result.isSuccess(item.result) ? item.result.success.name : "failed")),
        ["Ada", "failed", "Barbara"]
      )
      const names = yield* Fanout.pipeline(
        [`${server.url}/users/1`, `${server.url}/users/2`],
        (item: Fanout.Item<typeof User.Type>) => Effect.succeed(item.value.name.toUpperCase()),
        { read: Fanout.json(User), ordered: true }
      ).pipe(Stream.runCollect)
      assert.deepStrictEqual(
        names.map((item) => item.value),
        ["ADA", "GRACE"]
      )
      // The fail-fast stream fails with the item's typed error.
      const error = yield* Fanout.stream(urls, { read: Fanout.json(User), ordered: true, concurrency: 1 }).pipe(
        Stream.runDrain,
        Effect.flip
      )
      assert.strictEqual(error._tag, "HttpClientError")
      assert.include(error.message, `GET ${server.url}/mismatch`)
      const notJson = yield* Effect.flip(Http.getJson(`${server.url}/not-json`, User))
      assert.include(notJson.message, "body is not JSON")
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("decodes a body that arrived whole as it decodes one still arriving", () =>
    Effect.gen(function* () {
      const routes: Record<string, ReturnType<typeof sized>> = {}
      bodies.forEach((body, i) => {
        routes[`/sized/${i}`] = sized(body)
        routes[`/chunked/${i}`] = json(body)
      })
      const server = yield* origin(routes)
      for (const schema of [User, Count, Schema.NullOr(User), Schema.Unknown] as const) {
        const read = (kind: string) =>
          Fanout.allSettled(
            bodies.map((_, i) => `${server.url}/${kind}/${i}`),
            { concurrency: 4, read: Fanout.json(schema as Schema.Codec<unknown, unknown, never, never>) }
          )
        const whole = (yield* read("sized")).map(outcomeOf)
        const arriving = (yield* read("chunked")).map(outcomeOf)
        assert.deepStrictEqual(whole, arriving)
      }
      // The same for Http.getJson.
      const one = (kind: string) =>
        Effect.forEach(bodies, (_, i) => Effect.result(Http.getJson(`${server.url}/${kind}/${i}`, User)))
      assert.deepStrictEqual((yield* one("sized")).map(outcomeOf), (yield* one("chunked")).map(outcomeOf))
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  // As the JSDoc of getJson, postJson and Fanout.json says: an endpoint that answers 204 needs a
  // schema that takes `null`.
  it.live("decodes an empty body (a 204) as null, in Http.getJson, Http.postJson and Fanout.json", () =>
    Effect.gen(function* () {
      const noContent = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) =>
        req.resume().on("end", () => res.writeHead(204).end())
      const server = yield* origin({ "/none": noContent })
      const url = `${server.url}/none`
      assert.isNull(yield* Http.getJson(url, Schema.Null))
      assert.isNull(yield* Http.postJson(url, { name: "Ada" }, Schema.Null))
      assert.deepStrictEqual(yield* Fanout.all([url, url], { read: Fanout.json(Schema.NullOr(User)) }), [null, null])
      const refused = yield* Effect.flip(Http.getJson(url, User))
      assert.strictEqual(refused._tag === "HttpClientError" && refused.reason._tag, "DecodeError")
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("decodes in the context the batch runs in, and with a schema that suspends", () =>
    Effect.gen(function* () {
      const server = yield* origin({ "/a": sized('{"id":1}'), "/b": sized('{"id":2}') })
      const urls = [`${server.url}/a`, `${server.url}/b`]
      const shifted = yield* Fanout.all(urls, { read: Fanout.json(Shifted) }).pipe(Effect.provideService(Offset, 100))
      assert.deepStrictEqual(shifted, [{ id: 101 }, { id: 102 }])
      const slow = yield* Fanout.all(urls, { read: Fanout.json(Slow) })
      assert.deepStrictEqual(slow, [{ id: 2 }, { id: 4 }])
      const one = yield* Http.getJson(`${server.url}/b`, Shifted).pipe(Effect.provideService(Offset, 10))
      assert.deepStrictEqual(one, { id: 12 })
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("decodes each body once, whole or arriving, quick or suspending", () =>
    Effect.gen(function* () {
      const server = yield* origin({ "/sized": sized('{"id":1}'), "/chunked": json('{"id":1}') })
      let quick = 0
      let slow = 0
      const Counted = Schema.Struct({
        id: Schema.Number.pipe(
          Schema.decodeTo(Schema.Number, {
            decode: SchemaGetter.transform((n: number) => {
              quick++
              return n
            }),
            encode: SchemaGetter.transform((n: number) => n)
          })
        )
      })
      const Suspending = Schema.Struct({
        id: Schema.Number.pipe(
          Schema.decodeTo(Schema.Number, {
            decode: SchemaGetter.transformEffect((n: number) =>
              Effect.sync(() => slow++).pipe(Effect.andThen(Effect.sleep("1 millis")), Effect.as(n))
            ),
            encode: SchemaGetter.transform((n: number) => n)
          })
        )
      })
      const urls = [`${server.url}/sized`, `${server.url}/chunked`]
      yield* Fanout.all(urls, { read: Fanout.json(Counted) })
      yield* Fanout.all(urls, { read: Fanout.json(Suspending) })
      yield* Effect.forEach(urls, (url) => Http.getJson(url, Counted))
      yield* Effect.forEach(urls, (url) => Http.getJson(url, Suspending))
      assert.deepStrictEqual([quick, slow], [4, 4])
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("Http.getJson reads the same way, one URL at a time", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      assert.deepStrictEqual(yield* Http.getJson(`${server.url}/count`, Count), { count: 42 })
      const error = yield* Effect.flip(Http.getJson(`${server.url}/mismatch`, User))
      assert.strictEqual(error._tag, "HttpClientError")
      assert.include(error.message, `GET ${server.url}/mismatch`)
      const notJson = yield* Effect.flip(Http.getJson(`${server.url}/not-json`, User))
      assert.include(notJson.message, "body is not JSON")
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )
})
