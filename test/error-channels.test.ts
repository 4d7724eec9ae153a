// The error channel tells the truth: what a public export fails with at runtime is what its type
// says, as the typed error its docs name (no defect, no untyped failure, no throw), against a
// node:http server on 127.0.0.1.
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Layer } from "effect"
import { HttpClient, HttpClientError } from "effect/http"

/** A server whose every answer is a 503 asking for a retry in an hour. */
const busyServer = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<Server>((resolve) => {
        const server = createServer((_, res) => res.writeHead(503, { "retry-after": "3600" }).end("busy"))
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
  ),
  (server) => Effect.promise(() => new Promise((resolve) => server.close(resolve)))
).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

describe("error channels", () => {
  describe("Retry.layerClient", () => {
    it.live("fails an HttpClient call with an HttpClientError, as the HttpClient service's type says", () =>
      Effect.gen(function* () {
        const url = yield* busyServer
        // Effect<HttpClientResponse, HttpClientError, HttpClient>: the policy gives up at once (a
        // Retry-After of an hour is over its cap) and that must arrive as an HttpClientError.
        const exit = yield* Effect.exit(HttpClient.get(`${url}/x`))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        assert.isTrue(HttpClientError.isHttpClientError(error), String(error))
        const reason = (error as HttpClientError.HttpClientError).reason
        assert.strictEqual(reason._tag, "TransportError")
        assert.strictEqual((reason.cause as { _tag?: string })._tag, "RetryAfterTooLong")
        // A handler of every error the type names handles every failure.
        const handled = yield* HttpClient.get(`${url}/x`).pipe(
          Effect.catchTag("HttpClientError", () => Effect.succeed("handled"))
        )
        assert.strictEqual(handled, "handled")
      }).pipe(Effect.scoped, Effect.provide(Retry.layerClient.pipe(Layer.provide(NodeHttpClient.layer()))))
    )
  })
})
