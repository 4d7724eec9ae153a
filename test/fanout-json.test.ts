// Typed reads in batches: `Fanout.json(schema)` as the `read` of every batch form, against a
// real node:http origin through @volley/node's client. Decode failures are per item, typed, and
// name the request and the schema's issue.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Result, Schema, Stream } from "effect"
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
