// Query parameters named in `UrlParams.CurrentRedactedNames` (Effect's list, the OpenTelemetry
// `url.full` names by default) never show in volley's errors, whichever path made them: errors
// built in undici's callbacks (no fiber current), volley's own errors (deadline, Retry-After,
// redirects), and the traced path's spans.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Result, Stream, Tracer } from "effect"
import { UrlParams } from "effect/http"
import { closedPort, origin } from "./support/origin.ts"
import { onSpanEnd } from "./support/tracer.ts"

const SECRET = "s3cr3t-value"

const routes = {
  "/ok": (_req, res) => res.end("ok"),
  "/missing": (_req, res) => res.writeHead(404).end("no"),
  "/busy": (_req, res) => res.writeHead(503, { "retry-after": "3600" }).end(),
  // A redirect loop whose every hop carries the token.
  "/loop": (req, res) => {
    const n = Number(new URL(req.url ?? "/", "http://x").searchParams.get("n") ?? 0)
    res.writeHead(302, { location: `/loop?n=${(n + 1) % 2}&token=${SECRET}` }).end()
  },
  "/hang": () => {},
  "/auth": (req, res) => res.end(req.headers.authorization ?? "none")
} satisfies Parameters<typeof origin>[0]

// Every way an error reaches a person: its message, its string, its JSON (loggers), the cause.
const renderings = (cause: Cause.Cause<unknown>): Array<string> => {
  const error = Cause.squash(cause) as Error
  return [error.message, String(error), JSON.stringify(error), Cause.pretty(cause)]
}

const assertHidden = (cause: Cause.Cause<unknown>, what: string) => {
  for (const text of renderings(cause)) {
    assert.notInclude(text, SECRET, `${what}: ${text}`)
  }
  assert.include(renderings(cause)[0], "REDACTED", what)
}

describe("URL redaction", () => {
  it.live("Http.* errors hide redacted query parameters: transport, status and Retry-After failures", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const failures = {
        transport: `http://127.0.0.1:${yield* closedPort}/x?token=${SECRET}`,
        status: `${server.url}/missing?a=1&token=${SECRET}`,
        retryAfter: `${server.url}/busy?token=${SECRET}`,
        redirects: `${server.url}/loop?n=0&token=${SECRET}`
      }
      for (const [what, url] of Object.entries(failures)) {
        const exit = yield* Effect.exit(Http.getText(url))
        assert.isTrue(Exit.isFailure(exit), what)
        if (Exit.isFailure(exit)) assertHidden(exit.cause, what)
      }
    }).pipe(
      Effect.scoped,
      Effect.provideService(UrlParams.CurrentRedactedNames, ["token"]),
      Effect.provide(NodeHttpClient.layer())
    )
  )

  it.live("a batch's errors hide them too, a deadline's included; Effect's default names apply without a list", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const custom = yield* Fanout.allSettled(
        [
          `http://127.0.0.1:${yield* closedPort}/x?token=${SECRET}`,
          `${server.url}/missing?token=${SECRET}`,
          `${server.url}/busy?token=${SECRET}`,
          `${server.url}/loop?n=0&token=${SECRET}`,
          `${server.url}/hang?token=${SECRET}`
        ],
        { deadline: "1 second" }
      ).pipe(Effect.provideService(UrlParams.CurrentRedactedNames, ["token"]))
      const tags = custom.map((result) => {
        assert.isTrue(Result.isFailure(result))
        const error = Result.isFailure(result) ? result.failure : undefined
        assertHidden(Cause.fail(error), String((error as { _tag?: string })._tag))
        return (error as { _tag: string })._tag
      })
      assert.deepStrictEqual(tags, [
        "HttpClientError",
        "HttpClientError",
        "RetryAfterTooLong",
        "RedirectError",
        "DeadlineExceeded"
      ])

      // Without a list of its own, Effect's defaults (the OpenTelemetry names) apply.
      const [signed] = yield* Fanout.allSettled([`${server.url}/missing?Signature=${SECRET}`])
      assert.isTrue(signed !== undefined && Result.isFailure(signed))
      if (signed !== undefined && Result.isFailure(signed)) assertHidden(Cause.fail(signed.failure), "default names")
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  // Found by review: ItemInterrupted kept its request's URL as given, so an item interrupted from
  // inside (its read, a pipeline's stage) or cancelled showed its user info and signed parameters
  // in its message, JSON and inspection.
  it.live("an interrupted or cancelled item's ItemInterrupted hides them and the URL's user info", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const url = (path: string) => `${server.url.replace("http://", `http://alice:${SECRET}@`)}${path}?token=${SECRET}`
      const read = yield* Fanout.allSettled([url("/ok")], { read: () => Effect.interrupt })
      const cancelled = yield* Fanout.allSettled([Fanout.cancellable(url("/hang"), Effect.sleep("50 millis"))])
      const staged = yield* Stream.runCollect(Fanout.pipelineSettled([url("/ok")], () => Effect.interrupt))
      const failures = [...read, ...cancelled, ...[...staged].map((item) => item.result)].map((result) =>
        Result.isFailure(result) ? result.failure : undefined
      )
      assert.strictEqual(failures.length, 3)
      for (const failure of failures) {
        assert.instanceOf(failure, Fanout.ItemInterrupted)
        assertHidden(Cause.fail(failure), "ItemInterrupted")
        assert.include((failure as Fanout.ItemInterrupted).url, "REDACTED:REDACTED@")
      }
    }).pipe(
      Effect.scoped,
      Effect.provideService(UrlParams.CurrentRedactedNames, ["token"]),
      Effect.provide(NodeHttpClient.layer())
    )
  )

  // As the README says: NodeHttpClient sends no user info (undici takes the origin without it).
  it.live("a URL's user info is not sent, nor made into an Authorization header", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const url = `${server.url.replace("http://", `http://alice:${SECRET}@`)}/auth`
      assert.strictEqual(yield* Http.getText(url), "none")
      assert.deepStrictEqual(yield* Fanout.all([url], { read: (response) => response.text }), ["none"])
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))
  )

  it.live("a traced request's client span shows its URL redacted", () =>
    Effect.gen(function* () {
      const server = yield* origin(routes)
      const attributes: Array<string> = []
      const tracer = onSpanEnd((span) => {
        attributes.push(JSON.stringify(Object.fromEntries(span.attributes)))
      })
      const exit = yield* Effect.exit(
        Http.getText(`${server.url}/missing?token=${SECRET}`).pipe(Effect.provideService(Tracer.Tracer, tracer))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) assertHidden(exit.cause, "traced")
      const client = attributes.filter((text) => text.includes("url.full"))
      assert.isAbove(client.length, 0)
      for (const text of client) assert.notInclude(text, SECRET, text)
    }).pipe(
      Effect.scoped,
      Effect.provideService(UrlParams.CurrentRedactedNames, ["token"]),
      Effect.provide(NodeHttpClient.layer())
    )
  )
})
