// Redirects answered by a real nginx (`return 30x`), across its two loopback origins: plain HTTP
// on one port, TLS + http2 on another with a test CA. The node:http suite (redirects.test.ts)
// covers every rule; this one checks them against redirects as a production server writes them
// (nginx makes a relative `return` absolute from the Host it was sent).
import { assert, describe, it } from "@effect/vitest"
import { Http, Redirects, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Exit, Layer } from "effect"
import { HttpClientRequest } from "effect/http"
import { nginx } from "./support/nginx.ts"

const locations = `
  location = /start { return 301 /cross; }
  location = /cross { return 302 @HTTPS@/hop; }
  location = /hop { return 307 /final; }
  location = /final { echo "final $scheme $server_protocol"; }
  location = /post301 { return 301 @HTTPS@/method; }
  location = /post303 { return 303 /method; }
  location = /post307 { return 307 /method; }
  location = /post308 { return 308 @HTTPS@/method; }
  location = /method { echo_read_request_body; echo "$request_method [$echo_request_body]"; }
  location = /same-whoami { return 302 /whoami; }
  location = /cross-whoami { return 302 @HTTPS@/whoami; }
  location = /whoami { echo "auth=[$http_authorization] cookie=[$http_cookie]"; }
  location = /loop-a { return 302 /loop-b; }
  location = /loop-b { return 302 /loop-a; }
  location ~ ^/many/(.*)$ { return 302 /many/$1x; }
  location = /down { return 302 @HTTP@/final; }
`

const server = nginx(locations)

const client = (ca: string) =>
  Layer.merge(NodeHttpClient.layer({ tls: { ca }, http2: true }), Retry.layer({ retries: 0 }))

/** The body and the chain of URLs that led to it. */
const follow = (request: HttpClientRequest.HttpClientRequest) =>
  Http.send(request, (response) =>
    Effect.map(response.text, (text) => ({ text: text.trim(), chain: Redirects.chain(response) }))
  )

const redirectError = <A, E>(exit: Exit.Exit<A, E>) => {
  assert.isTrue(Exit.isFailure(exit))
  const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
  assert.strictEqual(error?._tag, "Fail")
  const value = (error as { error: Redirects.RedirectError }).error
  assert.strictEqual(value._tag, "RedirectError")
  return value
}

describe("Redirects (nginx)", () => {
  it.live("follows 301 → 302 to the TLS origin → 307, and names every hop", () =>
    Effect.gen(function* () {
      const s = yield* server
      assert.isTrue(s.echo, "nginx's echo module is installed by scripts/provision.sh")
      const { text, chain } = yield* follow(HttpClientRequest.get(`${s.http}/start`)).pipe(Effect.provide(client(s.ca)))
      assert.strictEqual(text, "final https HTTP/2.0")
      assert.deepStrictEqual(chain, [`${s.http}/start`, `${s.http}/cross`, `${s.https}/hop`, `${s.https}/final`])
    }).pipe(Effect.scoped)
  )

  it.live("turns a POST into a GET on 301 and 303, and resends method and body on 307 and 308", () =>
    Effect.gen(function* () {
      const s = yield* server
      const post = (path: string) =>
        follow(HttpClientRequest.post(`${s.http}${path}`).pipe(HttpClientRequest.bodyText("payload"))).pipe(
          Effect.map(({ text }) => text)
        )
      const answers = yield* Effect.forEach(["/post301", "/post303", "/post307", "/post308"], post).pipe(
        Effect.provide(client(s.ca))
      )
      assert.deepStrictEqual(answers, ["GET []", "GET []", "POST [payload]", "POST [payload]"])
    }).pipe(Effect.scoped)
  )

  it.live("keeps Authorization and Cookie on the same origin and drops them on the way to another", () =>
    Effect.gen(function* () {
      const s = yield* server
      const headers = { authorization: "Bearer t0ken", cookie: "session=1" }
      const [same, cross] = yield* Effect.all([
        Http.getText(`${s.http}/same-whoami`, { headers }),
        Http.getText(`${s.http}/cross-whoami`, { headers })
      ]).pipe(Effect.provide(client(s.ca)))
      assert.strictEqual(same.trim(), "auth=[Bearer t0ken] cookie=[session=1]")
      assert.strictEqual(cross.trim(), "auth=[] cookie=[]")
    }).pipe(Effect.scoped)
  )

  it.live("fails a loop, too many hops and an https → http downgrade with a RedirectError naming the chain", () =>
    Effect.gen(function* () {
      const s = yield* server
      const [loop, many, down] = yield* Effect.all([
        Effect.exit(Http.getText(`${s.http}/loop-a`)),
        Effect.exit(Http.getText(`${s.http}/many/x`)),
        Effect.exit(Http.getText(`${s.https}/down`))
      ]).pipe(Effect.provide(client(s.ca)))
      const loopError = redirectError(loop)
      assert.strictEqual(loopError.reason, "loop")
      assert.deepStrictEqual(loopError.chain.slice(0, 2), [`${s.http}/loop-a`, `${s.http}/loop-b`])
      const manyError = redirectError(many)
      assert.strictEqual(manyError.reason, "too-many")
      assert.strictEqual(manyError.chain.length, 11)
      const downError = redirectError(down)
      assert.strictEqual(downError.reason, "downgrade")
      assert.strictEqual(downError.location, `${s.http}/final`)
      // Allowed, the same hop is followed.
      const allowed = yield* Http.getText(`${s.https}/down`).pipe(
        Redirects.withOptions({ allowDowngrade: true }),
        Effect.provide(client(s.ca))
      )
      assert.strictEqual(allowed.trim(), "final http HTTP/1.1")
    }).pipe(Effect.scoped)
  )
})
