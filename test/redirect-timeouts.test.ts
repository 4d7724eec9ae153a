// A redirect hop hanging past attemptTimeout, NodeHttpClient against a real loopback server: the
// attempt fails with TimeoutError and is retried (its hop's own timer, due at the same moment, once
// raced the attempt's and ended some requests with a final DeadlineExceeded or TimeoutError).
import { createServer, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Http, Resilience, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Result } from "effect"

const server = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ url: string; reset: () => void; close: () => void; as: () => number }>((resolve) => {
        let b = 0
        let a = 0
        const hung: Array<ServerResponse> = []
        const s = createServer((req, res) => {
          if (req.url === "/a") a++
          if (req.url === "/a") return res.writeHead(302, { location: "/b", "content-length": "0" }).end()
          if (b++ === 0) return void hung.push(res)
          res.writeHead(200, { "content-type": "text/plain" }).end("ok")
        })
        s.listen(0, "127.0.0.1", () =>
          resolve({
            url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
            as: () => a,
            reset: () => {
              a = 0
              b = 0
              for (const r of hung.splice(0)) r.destroy()
            },
            close: () => {
              s.closeAllConnections()
              s.close()
            }
          })
        )
      })
  ),
  (s) => Effect.sync(() => s.close())
)

// 150 ms per attempt: with 40 ms, a CI run beside other work once had two of the 20 requests time out
// on all three attempts (a request and its hop on a loaded 2-core machine took longer than that).
const retry = { retries: 2, attemptTimeout: "150 millis", baseDelay: "1 millis", jitter: false, budget: false } as const

for (const rateLimit of [undefined, { limit: 10_000, window: "1 second" }] as const) {
  describe(`a hop hanging past attemptTimeout, ${rateLimit === undefined ? "no rate limit" : "under a rate limit"}`, () => {
    it.live(
      "is retried: 20 requests in a row all succeed, none ends with DeadlineExceeded or a final TimeoutError",
      () =>
        Effect.gen(function* () {
          const { url, reset, as } = yield* server
          const results: Record<string, number> = {}
          for (let i = 0; i < 20; i++) {
            reset()
            const result = yield* Http.getText(`${url}/a`).pipe(Effect.result, Effect.timeout("3 seconds"))
            const key = Result.isSuccess(result)
              ? result.success
              : `${(result.failure as { _tag: string })._tag} after ${as()} request(s) to /a`
            results[key] = (results[key] ?? 0) + 1
          }
          assert.deepStrictEqual(results, { ok: 20 })
        }).pipe(
          Effect.scoped,
          Effect.provide(
            rateLimit === undefined
              ? Layer.merge(NodeHttpClient.layer(), Retry.layer(retry))
              : Resilience.layer({ rateLimit, retry }).pipe(Layer.provide(NodeHttpClient.layer()))
          )
        )
    )
  })
}
