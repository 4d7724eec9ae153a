// Redirects against real origins on two loopback ports (and one https origin with a test CA),
// through @volley/node's client: chains across origins, method rewriting, header dropping,
// loops and hop limits, downgrades, bad Locations, credentials in a Location, and that
// `Http.*` and every batch form follow the same way.

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Redirects, Resilience, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Effect, Layer, Metric, Result, Stream, Tracer } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { makePki } from "../packages/node/test/fixtures/pki.ts"
import { type Handler, origin } from "./support/origin.ts"
import { onSpanEnd } from "./support/tracer.ts"

interface Seen {
  readonly method: string
  readonly path: string
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

// Two origins whose handlers redirect to each other: `to(res, status, url)` answers a redirect.
const to = (res: ServerResponse, status: number, location: string) =>
  res.writeHead(status, { location, "content-length": "4" }).end("move")

const recording =
  (seen: Array<Seen>, answer: string): Handler =>
  (req: IncomingMessage, res: ServerResponse) => {
    let body = ""
    req.setEncoding("utf8")
    req.on("data", (chunk: string) => (body += chunk))
    req.on("end", () => {
      seen.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body })
      res.writeHead(200, { "content-type": "text/plain" }).end(answer)
    })
  }

// Answers after 30 ms, recording the most requests it had at once.
const slow =
  (peak: { now: number; max: number }, answer: string): Handler =>
  (_req, res) => {
    peak.now++
    peak.max = Math.max(peak.max, peak.now)
    setTimeout(() => {
      peak.now--
      res.end(answer)
    }, 30)
  }

const twoOrigins = Effect.gen(function* () {
  const peakA = { now: 0, max: 0 }
  const peakB = { now: 0, max: 0 }
  const seenA: Array<Seen> = []
  const seenB: Array<Seen> = []
  const urls = { a: "", b: "" }
  const a = yield* origin({
    "/start": (_req, res) => to(res, 301, "/middle"),
    "/middle": (_req, res) => to(res, 302, `${urls.b}/final`),
    "/same-origin": (_req, res) => to(res, 302, "/echo"),
    "/cross": (_req, res) => to(res, 302, `${urls.b}/echo`),
    "/echo": recording(seenA, "a"),
    "/s301": (_req, res) => to(res, 301, "/echo"),
    "/s302": (_req, res) => to(res, 302, "/echo"),
    "/s303": (_req, res) => to(res, 303, "/echo"),
    "/s307": (_req, res) => to(res, 307, "/echo"),
    "/s308": (_req, res) => to(res, 308, "/echo"),
    "/loop1": (_req, res) => to(res, 302, "/loop2"),
    "/loop2": (_req, res) => to(res, 302, `${urls.b}/loop3`),
    "/endless": (req, res) =>
      to(res, 302, `/endless?n=${Number(new URL(req.url!, "http://x").searchParams.get("n") ?? 0) + 1}`),
    "/file": (_req, res) => to(res, 302, "file:///etc/passwd"),
    "/ftp": (_req, res) => to(res, 301, "ftp://127.0.0.1/x"),
    "/malformed": (_req, res) => to(res, 302, "http://[::1"),
    "/credentials": (_req, res) => to(res, 302, `${urls.b.replace("http://", "http://mallory:s3cret@")}/echo`),
    "/query": (_req, res) => to(res, 302, "/echo?page=2"),
    "/signed": (_req, res) => to(res, 302, "/echo?sig=a%2Bb%20c&flag&path=/x~y;z"),
    "/flaky-next": (_req, res) => to(res, 302, `${urls.b}/flaky`),
    "/down-next": (_req, res) => to(res, 302, `${urls.b}/down`),
    "/later-next": (_req, res) => to(res, 302, `${urls.b}/later`),
    "/to-b-slow": (_req, res) => to(res, 302, `${urls.b}/slow`),
    "/slow": slow(peakA, "a"),
    "/via-b": (_req, res) => to(res, 302, `${urls.b}/onward`),
    "/round-trip": (_req, res) => to(res, 302, `${urls.b}/back`),
    // Node writes a header string as latin1: "\u00c3\u00a9" goes out as the bytes C3 A9, UTF-8 "é"
    // (the Buffer body keeps Node from writing the head as UTF-8), and "\u00e9" as E9 alone.
    "/utf8": (_req, res) => res.writeHead(302, { location: "/caf\u00c3\u00a9" }).end(Buffer.from("move")),
    "/latin1": (_req, res) => res.writeHead(302, { location: "/caf\u00e9" }).end(Buffer.from("move")),
    "/caf%C3%A9": recording(seenA, "café"),
    "/caf%EF%BF%BD": recording(seenA, "replaced")
  })
  let flaky = 0
  const b = yield* origin({
    "/final": (_req, res) => res.end("final"),
    "/echo": recording(seenB, "b"),
    "/loop3": (_req, res) => to(res, 302, `${urls.a}/loop1`),
    "/flaky": (_req, res) => (++flaky === 1 ? res.writeHead(503).end("busy") : res.end("recovered")),
    "/down": (_req, res) => res.writeHead(503).end("down"),
    "/later": (_req, res) => res.writeHead(503, { "retry-after": "30" }).end("later"),
    "/slow": slow(peakB, "b"),
    "/to-a-slow": (_req, res) => to(res, 302, `${urls.a}/slow`),
    "/onward": (_req, res) => to(res, 302, "/echo"),
    "/back": (_req, res) => to(res, 302, `${urls.a}/echo`)
  })
  urls.a = a.url
  urls.b = b.url
  return { a, b, seenA, seenB, peakA, peakB }
})

const Client = NodeHttpClient.layer()
const pki = makePki()
const NoRetryDelay = Retry.layer({ jitter: false, baseDelay: 0, budget: false })

const redirectError = (error: unknown): Redirects.RedirectError => {
  assert.instanceOf(error, Redirects.RedirectError)
  return error as Redirects.RedirectError
}

describe("Redirects", () => {
  it.live("follows a chain across two origins by default; the final response carries the chain", () =>
    Effect.gen(function* () {
      const { a, b } = yield* twoOrigins
      assert.strictEqual(yield* Http.getText(`${a.url}/start`), "final")
      const seen = yield* Http.send(HttpClientRequest.get(`${a.url}/start`), (response) =>
        Effect.map(response.text, (text) => ({ text, chain: Redirects.chain(response), url: response.request.url }))
      )
      assert.deepStrictEqual(seen, {
        text: "final",
        chain: [`${a.url}/start`, `${a.url}/middle`, `${b.url}/final`],
        url: `${b.url}/final`
      })
      // A response that was not redirected: its own URL.
      const plain = yield* Http.send(HttpClientRequest.get(`${b.url}/final`), (response) =>
        Effect.succeed(Redirects.chain(response))
      )
      assert.deepStrictEqual(plain, [`${b.url}/final`])
      // The query of a Location is kept.
      const query = yield* Http.send(HttpClientRequest.get(`${a.url}/query`), (response) =>
        Effect.as(response.text, Redirects.chain(response).at(-1))
      )
      assert.strictEqual(query, `${a.url}/echo?page=2`)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("counts each followed redirect and each retry by origin (volley_http_redirects_total, _retries_total)", () =>
    Effect.gen(function* () {
      const { a, b } = yield* twoOrigins
      const counter = (metric: typeof Http.metrics.redirects, origin: string) =>
        Effect.map(Metric.value(Metric.withAttributes(metric, { origin })), (state) => state.count)
      const redirectsToB = yield* counter(Http.metrics.redirects, b.url)
      const redirectsToA = yield* counter(Http.metrics.redirects, a.url)
      const retriesAtB = yield* counter(Http.metrics.retries, b.url)
      yield* Http.getText(`${a.url}/start`) // A -> A -> B
      yield* Http.getText(`${a.url}/flaky-next`) // A -> B, one 503 retried at B
      assert.strictEqual((yield* counter(Http.metrics.redirects, b.url)) - redirectsToB, 2)
      assert.strictEqual((yield* counter(Http.metrics.redirects, a.url)) - redirectsToA, 1)
      assert.strictEqual((yield* counter(Http.metrics.retries, b.url)) - retriesAtB, 1)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Client, NoRetryDelay)))
  )

  it.live("every Fanout form follows redirects, and a refused one fails only its item", () =>
    Effect.gen(function* () {
      const { a } = yield* twoOrigins
      const urls = [`${a.url}/start`, `${a.url}/file`, `${a.url}/echo`]
      const results = yield* Fanout.allSettled(urls, { read: (r) => r.text })
      assert.deepStrictEqual(results[0], Result.succeed("final"))
      assert.deepStrictEqual(results[2], Result.succeed("a"))
      const failed = results[1]!
      assert.isTrue(Result.isFailure(failed))
      assert.strictEqual(
        redirectError(Result.isFailure(failed) ? failed.failure : undefined).reason,
        "unsupported-scheme"
      )
      const streamed = yield* Fanout.stream([`${a.url}/start`], { read: (r) => r.text }).pipe(Stream.runCollect)
      assert.deepStrictEqual(
        streamed.map((item) => item.value),
        ["final"]
      )
      const fromPipeline = yield* Fanout.pipeline([`${a.url}/start`], (item) =>
        Effect.succeed(item.value.byteLength)
      ).pipe(Stream.runCollect)
      assert.deepStrictEqual(
        fromPipeline.map((item) => item.value),
        [5]
      )
      // Fail-fast forms fail with the typed error.
      const error = yield* Effect.flip(Fanout.all([`${a.url}/ftp`]))
      assert.strictEqual(redirectError(error).reason, "unsupported-scheme")
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("rewrites POST to GET on 301/302/303 (body dropped) and keeps method and body on 307/308", () =>
    Effect.gen(function* () {
      const { a, seenA } = yield* twoOrigins
      for (const status of [301, 302, 303, 307, 308]) {
        yield* Http.postText(`${a.url}/s${status}`, `body ${status}`)
      }
      yield* Http.send(
        HttpClientRequest.put(`${a.url}/s308`).pipe(HttpClientRequest.bodyText("put body")),
        (r) => r.text
      )
      yield* Http.send(HttpClientRequest.head(`${a.url}/s303`), () => Effect.void)
      assert.deepStrictEqual(
        seenA.map((seen) => `${seen.method} ${seen.body}`),
        ["GET ", "GET ", "GET ", "POST body 307", "POST body 308", "PUT put body", "HEAD "]
      )
      // The dropped body took its headers with it.
      assert.isUndefined(seenA[0]!.headers["content-type"])
      assert.isUndefined(seenA[0]!.headers["content-length"])
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("drops Content-Encoding, -Language and -Location with the body when POST turns into GET", () =>
    Effect.gen(function* () {
      const { a, seenA } = yield* twoOrigins
      for (const status of [301, 302, 303]) {
        // Effect's compressBody sets Content-Encoding: a bodiless GET must not claim a gzip body.
        const request = yield* HttpClientRequest.post(`${a.url}/s${status}`).pipe(
          HttpClientRequest.bodyText("x=1".repeat(100)),
          HttpClientRequest.setHeaders({ "content-language": "en", "content-location": "/form" }),
          HttpClientRequest.compressBody("gzip")
        )
        yield* Http.send(request, (r) => r.text)
      }
      for (const seen of seenA) {
        assert.strictEqual(seen.method, "GET")
        assert.strictEqual(seen.body, "")
        for (const header of ["content-type", "content-encoding", "content-language", "content-location"]) {
          assert.isUndefined(seen.headers[header], header)
        }
      }
      assert.strictEqual(seenA.length, 3)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("refuses a 307 whose body was a stream (used up), and sends nothing more", () =>
    Effect.gen(function* () {
      const { a, seenA } = yield* twoOrigins
      const request = HttpClientRequest.post(`${a.url}/s307`).pipe(
        HttpClientRequest.bodyStream(Stream.fromIterable([new TextEncoder().encode("once")]))
      )
      const error = yield* Effect.flip(Http.send(request, (r) => r.text))
      const refused = redirectError(error)
      assert.strictEqual(refused.reason, "body-not-replayable")
      assert.strictEqual(refused.status, 307)
      assert.deepStrictEqual(seenA, [])
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("drops Authorization, Cookie, Proxy-Authorization and marked headers across origins only", () =>
    Effect.gen(function* () {
      const { a, seenA, seenB } = yield* twoOrigins
      const headers = {
        authorization: "Bearer secret",
        cookie: "session=1",
        "proxy-authorization": "Basic cHJveHk=",
        "x-api-key": "key",
        "x-trace": "keep"
      }
      yield* Http.getText(`${a.url}/same-origin`, { headers })
      assert.strictEqual(seenA[0]!.headers.authorization, "Bearer secret")
      assert.strictEqual(seenA[0]!.headers.cookie, "session=1")
      yield* Http.getText(`${a.url}/cross`, { headers })
      const crossed = seenB[0]!.headers
      assert.isUndefined(crossed.authorization)
      assert.isUndefined(crossed.cookie)
      assert.isUndefined(crossed["proxy-authorization"])
      assert.strictEqual(crossed["x-api-key"], "key", "not marked sensitive: sent on")
      assert.strictEqual(crossed["x-trace"], "keep")
      yield* Http.getText(`${a.url}/cross`, { headers }).pipe(
        Redirects.withOptions({ sensitiveHeaders: ["X-Api-Key"] })
      )
      assert.isUndefined(seenB[1]!.headers["x-api-key"])
      assert.strictEqual(seenB[1]!.headers["x-trace"], "keep")
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("drops a header added by a client transform on every hop after crossing origins, back home too", () =>
    Effect.gen(function* () {
      const { a, seenA, seenB } = yield* twoOrigins
      // Credentials on the client, as the README advises for cluster runners: the transform runs
      // on every hop, so the hop's client must strip after it.
      const authed = Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.bearerToken("t0ken")))
      yield* Effect.gen(function* () {
        yield* Http.getText(`${a.url}/same-origin`)
        assert.strictEqual(seenA[0]!.headers.authorization, "Bearer t0ken", "same origin: sent")
        yield* Http.getText(`${a.url}/cross`) // A -> B
        yield* Http.getText(`${a.url}/via-b`) // A -> B -> B: a later hop, at B
        yield* Http.getText(`${a.url}/round-trip`) // A -> B -> A: the trade-off, dropped back home too
      }).pipe(Effect.provideServiceEffect(HttpClient.HttpClient, authed))
      assert.deepStrictEqual(
        seenB.map((seen) => seen.headers.authorization),
        [undefined, undefined]
      )
      assert.isUndefined(seenA[1]!.headers.authorization)
      // The client under a Retry.withPolicy wrapper keeps its transform, and is stripped the same way.
      yield* Http.getText(`${a.url}/cross`).pipe(
        Effect.provide(Retry.layerClient),
        Effect.provideServiceEffect(HttpClient.HttpClient, authed)
      )
      assert.isUndefined(seenB[2]!.headers.authorization)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live(
    "drops a transform's header cross-origin when another transform sits above its Retry.withPolicy wrapper",
    () =>
      Effect.gen(function* () {
        const { a, seenB } = yield* twoOrigins
        // The token is added under the wrapper, a harmless header over it: the wrapper sends each
        // request through the client it wraps, whose transform runs after anything above it.
        const layered = (withPolicy: typeof Retry.withPolicy) =>
          Effect.map(
            HttpClient.HttpClient,
            (client) =>
              client.pipe(
                HttpClient.mapRequest(HttpClientRequest.bearerToken("t0ken")),
                withPolicy,
                HttpClient.mapRequest(HttpClientRequest.setHeader("x-outer", "1"))
              ) as HttpClient.HttpClient
          )
        yield* Http.getText(`${a.url}/cross`).pipe(
          Effect.provideServiceEffect(HttpClient.HttpClient, layered(Retry.withPolicy))
        )
        // Two wrappers, the token between them.
        yield* Http.getText(`${a.url}/cross`).pipe(
          Effect.provideServiceEffect(
            HttpClient.HttpClient,
            layered(<E, R>(client: HttpClient.HttpClient.With<E, R>) => Retry.withPolicy(Retry.withPolicy(client)))
          )
        )
        assert.deepStrictEqual(
          seenB.map((seen) => [seen.headers.authorization, seen.headers["x-outer"]]),
          [
            [undefined, "1"],
            [undefined, "1"]
          ]
        )
      }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("keeps the credentials of a token a transform fetches while a cross-origin hop is prepared", () =>
    Effect.gen(function* () {
      const tokenAuth: Array<string | undefined> = []
      const seenB: Array<IncomingHttpHeaders> = []
      const token = yield* origin({
        "/token": (req, res) => {
          tokenAuth.push(req.headers.authorization)
          if (req.headers.authorization === undefined) res.writeHead(401).end("no credentials")
          else res.end("tok")
        }
      })
      const b = yield* origin({
        "/echo": (req, res) => {
          seenB.push(req.headers)
          res.end("b")
        }
      })
      const a = yield* origin({
        "/cross": (_req, res) => res.writeHead(302, { location: `${b.url}/echo`, "content-length": "0" }).end()
      })
      const base = yield* HttpClient.HttpClient
      const basic = HttpClient.mapRequest(HttpClientRequest.basicAuth("client-id", "client-secret"))
      // The token, fetched with `Http.getText` on a client with Basic credentials above its
      // Retry.withPolicy wrapper, or with the client's own `get` on one with them under it.
      const tokenUrl = `${token.url}/token`
      const fetchers = [
        Http.getText(tokenUrl).pipe(
          Effect.provideService(HttpClient.HttpClient, basic(Retry.withPolicy(base)) as HttpClient.HttpClient)
        ),
        Effect.flatMap((Retry.withPolicy(basic(base)) as HttpClient.HttpClient).get(tokenUrl), (r) => r.text)
      ]
      // The API client fetches a token per request, in a transform above its own wrapper, or with none.
      const api = (wrapped: boolean, fetchToken: Effect.Effect<string, unknown>) =>
        HttpClient.mapRequestEffect(wrapped ? (Retry.withPolicy(base) as HttpClient.HttpClient) : base, (request) =>
          Effect.map(Effect.orDie(fetchToken), (bearer) => HttpClientRequest.bearerToken(request, bearer))
        ) as HttpClient.HttpClient
      for (const fetchToken of fetchers) {
        for (const wrapped of [true, false]) {
          const answer = yield* Http.getText(`${a.url}/cross`).pipe(
            Effect.provideService(HttpClient.HttpClient, api(wrapped, fetchToken))
          )
          assert.strictEqual(answer, "b")
        }
      }
      // Each hop fetched its token with its Basic credentials (the hop's stripping is its own request's)...
      assert.deepStrictEqual(tokenAuth, Array(8).fill("Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ="))
      // ...and sent no bearer token to the other origin.
      assert.deepStrictEqual(
        seenB.map((seen) => seen.authorization),
        Array(4).fill(undefined)
      )
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("sends a hop left untraced the enclosing span's trace context, or none, never the previous hop's", () =>
    Effect.gen(function* () {
      const { a, b, seenB } = yield* twoOrigins
      const spans: Array<Tracer.Span> = []
      // Client spans for A only, as a service tracing its own origins does; each call A -> B.
      const call = (wrap: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>) =>
        Http.getText(`${a.url}/cross`).pipe(
          wrap,
          Effect.provideService(HttpClient.TracerDisabledWhen, (request) => request.url.startsWith(b.url)),
          Effect.provideService(
            Tracer.Tracer,
            onSpanEnd((span) => spans.push(span))
          )
        )
      const traceOf = (i: number) => ({ traceparent: seenB[i]!.headers.traceparent, b3: seenB[i]!.headers.b3 })

      yield* call((effect) => effect)
      assert.deepStrictEqual(traceOf(0), { traceparent: undefined, b3: undefined })

      yield* call(Effect.withSpan("caller"))
      const caller = spans.find((span) => span.name === "caller")!
      assert.deepStrictEqual(traceOf(1), {
        traceparent: `00-${caller.traceId}-${caller.spanId}-01`,
        b3: `${caller.traceId}-${caller.spanId}-1`
      })
      const clients = spans.filter((span) => span.kind === "client")
      assert.deepStrictEqual(
        clients.map((span) => span.attributes.get("url.full")),
        [`${a.url}/cross`, `${a.url}/cross`]
      )
      for (const span of clients) assert.notInclude(JSON.stringify(seenB.map((seen) => seen.headers)), span.spanId)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("keeps the trace headers a caller set on every hop, traced or not, in a span or not", () =>
    Effect.gen(function* () {
      const { a, seenA, seenB } = yield* twoOrigins
      const own = {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "vendor=opaque"
      }
      const get = (path: string) => Http.getText(`${a.url}${path}`, { headers: own })
      // No span: the caller's own trace context, on the same origin and across origins.
      yield* get("/same-origin")
      yield* get("/cross")
      assert.deepInclude(seenA[0]!.headers, own)
      assert.deepInclude(seenB[0]!.headers, own)
      // In a span (no tracer recording): the span's traceparent goes over the caller's, hop after hop;
      // its tracestate is the caller's.
      const span = yield* Effect.flatMap(get("/cross"), () => Effect.currentSpan).pipe(Effect.withSpan("caller"))
      assert.deepInclude(seenB[1]!.headers, {
        traceparent: `00-${span.traceId}-${span.spanId}-01`,
        tracestate: "vendor=opaque"
      })
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("follows a Location sent as raw UTF-8 to the URL fetch goes to", () =>
    Effect.gen(function* () {
      const { a, seenA } = yield* twoOrigins
      // Node hands the header over as latin1 ("/cafÃ©"); its bytes are UTF-8, to decode before
      // resolving, as undici's fetch and browsers do.
      const chain = yield* Http.send(HttpClientRequest.get(`${a.url}/utf8`), (response) =>
        Effect.as(response.text, Redirects.chain(response))
      )
      assert.deepStrictEqual(chain, [`${a.url}/utf8`, `${a.url}/caf%C3%A9`])
      assert.strictEqual(seenA[0]!.path, "/caf%C3%A9")
      // Bytes that are not UTF-8 (a latin1 "é") become U+FFFD, as in fetch.
      assert.strictEqual(yield* Http.getText(`${a.url}/latin1`), "replaced")
      const viaFetch = yield* Effect.promise(() => fetch(`${a.url}/latin1`))
      assert.strictEqual(new URL(viaFetch.url).pathname, "/caf%EF%BF%BD")
      yield* Effect.promise(() => viaFetch.text())
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  // Found by review: a hop's URL had its query split into url params and written back
  // form-encoded, so `?sig=a%2Bb%20c&flag&path=/x~y;z` went out as
  // `?sig=a%2Bb+c&flag=&path=%2Fx%7Ey%3Bz`: another URL than the Location named (a signed
  // URL's signature covers the query as written), where fetch and curl send it as parsed.
  it.live("sends a Location's query as written, not re-encoded as form data", () =>
    Effect.gen(function* () {
      const { a, seenA } = yield* twoOrigins
      const final = yield* Http.send(
        HttpClientRequest.get(`${a.url}/signed`).pipe(HttpClientRequest.setUrlParam("first", "1")),
        (response) => Effect.as(response.text, response.request.url)
      )
      assert.strictEqual(seenA[0]!.path, "/echo?sig=a%2Bb%20c&flag&path=/x~y;z")
      assert.strictEqual(final, `${a.url}/echo?sig=a%2Bb%20c&flag&path=/x~y;z`)
      const viaFetch = yield* Effect.promise(() => fetch(`${a.url}/signed`))
      yield* Effect.promise(() => viaFetch.text())
      assert.strictEqual(seenA[1]!.path, seenA[0]!.path)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("never forwards credentials found in a Location", () =>
    Effect.gen(function* () {
      const { a, b, seenB } = yield* twoOrigins
      const chain = yield* Http.send(HttpClientRequest.get(`${a.url}/credentials`), (response) =>
        Effect.as(response.text, Redirects.chain(response))
      )
      assert.isUndefined(seenB[0]!.headers.authorization)
      assert.deepStrictEqual(chain, [`${a.url}/credentials`, `${b.url}/echo`])
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("fails a loop and too many hops with the chain; maxRedirects 0 turns following off", () =>
    Effect.gen(function* () {
      const { a, b } = yield* twoOrigins
      const loop = redirectError(yield* Effect.flip(Http.getText(`${a.url}/loop1`)))
      assert.strictEqual(loop.reason, "loop")
      assert.deepStrictEqual(loop.chain, [`${a.url}/loop1`, `${a.url}/loop2`, `${b.url}/loop3`])
      assert.include(loop.message, `GET ${a.url}/loop1 -> ${a.url}/loop2 -> ${b.url}/loop3: redirect loop`)
      const endless = redirectError(yield* Effect.flip(Http.getText(`${a.url}/endless`)))
      assert.strictEqual(endless.reason, "too-many")
      assert.strictEqual(endless.chain.length, 11, "the first request and 10 redirects")
      const before = a.requests()
      const three = redirectError(
        yield* Effect.flip(Http.getText(`${a.url}/endless`).pipe(Redirects.withOptions({ maxRedirects: 2 })))
      )
      assert.strictEqual(three.chain.length, 3)
      assert.strictEqual(a.requests() - before, 3, "nothing retried")
      const off = yield* Effect.flip(Http.getText(`${a.url}/start`).pipe(Redirects.withOptions({ maxRedirects: 0 })))
      assert.strictEqual(off._tag, "HttpClientError")
      assert.strictEqual(
        off._tag === "HttpClientError" && off.reason._tag === "StatusCodeError" && off.reason.response.status,
        301
      )
      const bad = yield* Effect.flip(Http.getText(`${a.url}/start`).pipe(Redirects.withOptions({ maxRedirects: -1 })))
      assert.strictEqual(bad._tag, "InvalidOptionsError")
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("refuses file:, ftp: and malformed Locations with a typed error", () =>
    Effect.gen(function* () {
      const { a } = yield* twoOrigins
      for (const [path, reason] of [
        ["/file", "unsupported-scheme"],
        ["/ftp", "unsupported-scheme"],
        ["/malformed", "invalid-location"]
      ] as const) {
        const error = redirectError(yield* Effect.flip(Http.getText(`${a.url}${path}`)))
        assert.strictEqual(error.reason, reason)
        assert.deepStrictEqual(error.chain, [`${a.url}${path}`])
      }
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("retries a hop on its own origin, not the whole chain", () =>
    Effect.gen(function* () {
      const { a, b } = yield* twoOrigins
      assert.strictEqual(yield* Http.getText(`${a.url}/flaky-next`), "recovered")
      assert.strictEqual(a.requests(), 1, "the first hop was not asked again")
      assert.strictEqual(b.requests(), 2, "the 503 was retried on its own origin")
      // A hop that stays down: its retries run out, and the first request is not run again.
      const down = yield* Effect.flip(Http.getText(`${a.url}/down-next`))
      assert.strictEqual(
        down._tag === "HttpClientError" && down.reason._tag === "StatusCodeError" && down.reason.response.status,
        503
      )
      assert.include(down.message, `${b.url}/down`)
      assert.strictEqual(a.requests(), 2)
      assert.strictEqual(b.requests(), 2 + 4, "the first try and 3 retries")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Client, NoRetryDelay)))
  )

  it.live("a batch's perHost limit holds for each hop's own origin, with no deadlock between two origins", () =>
    Effect.gen(function* () {
      const { a, b, peakA, peakB } = yield* twoOrigins
      // Half the items go to B directly, half are redirected there from A.
      const toB = [...Array(4).fill(`${b.url}/slow`), ...Array(4).fill(`${a.url}/to-b-slow`)]
      const results = yield* Fanout.all(toB, { concurrency: 8, perHost: 2, read: (r) => r.text })
      assert.deepStrictEqual(results, Array(8).fill("b"))
      assert.strictEqual(peakB.max, 2, "never more than perHost requests at the hop's origin")
      peakA.max = 0
      peakB.max = 0
      // Items of each origin redirect to the other: each holds one slot at a time, so none waits forever.
      const crossed = [`${a.url}/to-b-slow`, `${b.url}/to-a-slow`, `${a.url}/to-b-slow`, `${b.url}/to-a-slow`]
      const answers = yield* Fanout.all(crossed, { concurrency: 4, perHost: 1, read: (r) => r.text }).pipe(
        Effect.timeout("10 seconds")
      )
      assert.deepStrictEqual(answers, ["b", "a", "b", "a"])
      assert.strictEqual(peakA.max, 1)
      assert.strictEqual(peakB.max, 1)
    }).pipe(Effect.scoped, Effect.provide(Client))
  )

  // Found by review: a `read` ran with its worker's hop gate, so its own requests' redirects
  // moved the item from origin to origin; two at once each took a slot for it, one never given
  // back, and the batch hung at that origin (and so did a nested batch's, whose workers inherit it).
  it.live(
    "requests a batch's read makes are not the item's hops: their redirects take none of its per-host slots",
    () =>
      Effect.gen(function* () {
        const urls = { c: "", d: "" }
        // B redirects /c to C and /d to D; C answers /slow after 300 ms.
        const b = yield* origin({
          "/c": (_req, res) => to(res, 302, `${urls.c}/ok`),
          "/d": (_req, res) => to(res, 302, `${urls.d}/ok`)
        })
        const c = yield* origin({
          "/ok": (_req, res) => res.end("c"),
          "/slow": (_req, res) => setTimeout(() => res.end("c"), 300)
        })
        const d = yield* origin({ "/ok": (_req, res) => res.end("d") })
        urls.c = c.url
        urls.d = d.url
        const both = [`${b.url}/c`, `${b.url}/d`]
        for (const read of [
          () =>
            Effect.all(
              both.map((url) => Http.getText(url)),
              { concurrency: 2 }
            ),
          () => Fanout.all(both, { concurrency: 2, read: Http.readText })
        ]) {
          // The second item's read follows two redirects at once, to C (busy with the first item)
          // and to D; the third item needs D's only slot after that.
          const results = yield* Fanout.all([`${c.url}/slow`, `${d.url}/ok`, `${d.url}/ok`], {
            concurrency: 2,
            perHost: 1,
            read: (response) => Effect.andThen(response.text, read)
          }).pipe(Effect.timeout("5 seconds"))
          assert.deepStrictEqual(results, Array(3).fill(["c", "d"]))
        }
      }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live(
    "a retried item that had redirected starts again under its own origin's perHost limit",
    () =>
      Effect.gen(function* () {
        // A redirects /r to B; every request to either is counted while in flight.
        const peakA = { now: 0, max: 0 }
        const peakB = { now: 0, max: 0 }
        const counted =
          (peak: { now: number; max: number }, handler: Handler): Handler =>
          (req, res) => {
            peak.now++
            peak.max = Math.max(peak.max, peak.now)
            res.on("close", () => peak.now--)
            handler(req, res)
          }
        const target = { url: "" }
        const a = yield* origin({
          "/r": counted(peakA, (_req, res) => to(res, 302, target.url)),
          "/hang": counted(peakA, () => {})
        })
        const b = yield* origin({
          "/slow": counted(peakB, (_req, res) => setTimeout(() => res.end("b"), 2000)),
          "/ok": counted(peakB, (_req, res) => res.end("b"))
        })
        // Each attempt times out after 300 ms, and is retried once.
        const retrying = Retry.layer({
          retries: 1,
          attemptTimeout: "300 millis",
          baseDelay: "10 millis",
          jitter: false
        })
        // The hop got B's slot and timed out there: its retry goes to A again, under A's limit.
        target.url = `${b.url}/slow`
        yield* Fanout.allSettled([`${a.url}/r`, `${a.url}/hang`], { concurrency: 2, perHost: 1 }).pipe(
          Effect.provide(retrying)
        )
        assert.strictEqual(peakA.max, 1, "never more than perHost at the redirecting origin")
        // The hop waited for B's slot (held by a slow request) and timed out: its retry's hop waits again.
        peakA.max = 0
        peakB.max = 0
        target.url = `${b.url}/ok`
        yield* Fanout.allSettled([`${b.url}/slow`, `${a.url}/r`, `${a.url}/hang`], { concurrency: 3, perHost: 1 }).pipe(
          Effect.provide(retrying)
        )
        assert.strictEqual(peakA.max, 1, "never more than perHost at the redirecting origin")
        assert.strictEqual(peakB.max, 1, "never more than perHost at the hop's origin")
      }).pipe(Effect.scoped, Effect.provide(Client)),
    { timeout: 20_000 }
  )

  it.live("keeps a hop to the request's deadline: a Retry-After past it fails at once", () =>
    Effect.gen(function* () {
      const { a } = yield* twoOrigins
      const error = yield* Effect.flip(Http.getText(`${a.url}/later-next`))
      assert.strictEqual(error._tag, "RetryAfterTooLong")
      assert.strictEqual(error._tag === "RetryAfterTooLong" && error.limit, "deadline")
      const batch = yield* Fanout.allSettled([`${a.url}/later-next`], { deadline: "5 seconds" }).pipe(
        Effect.provide(Retry.layer({ budget: false }))
      )
      const item = batch[0]!
      assert.isTrue(Result.isFailure(item) && item.failure._tag === "RetryAfterTooLong")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(Client, Retry.layer({ timeout: "5 seconds", budget: false }))))
  )

  it.live(
    "keeps a hop to its attempt's attemptTimeout, under a rate limit too: a Retry-After past it fails at once",
    () =>
      Effect.gen(function* () {
        const retry = {
          retries: 1,
          attemptTimeout: "400 millis",
          baseDelay: "10 millis",
          jitter: false,
          budget: false
        } as const
        for (const rateLimit of [undefined, { limit: 1000, window: "1 second" }] as const) {
          const { a, b } = yield* twoOrigins
          const layer = Resilience.layer(rateLimit === undefined ? { retry } : { rateLimit, retry })
          const started = Date.now()
          const error = yield* Effect.flip(Http.getText(`${a.url}/later-next`).pipe(Effect.provide(layer)))
          const tookMillis = Date.now() - started
          // Before, under the rate limit, the hop slept for its Retry-After of 30 s until the
          // attempt's timer cut it, and the whole chain was sent again (TimeoutError, /a twice).
          assert.deepStrictEqual(
            {
              error: error._tag,
              limit: error._tag === "RetryAfterTooLong" && error.limit,
              a: a.requests(),
              b: b.requests()
            },
            { error: "RetryAfterTooLong", limit: "deadline", a: 1, b: 1 },
            JSON.stringify(rateLimit)
          )
          assert.isBelow(tookMillis, 400, "failed before the attempt's timer")
        }
      }).pipe(Effect.scoped, Effect.provide(Client))
  )

  it.live("refuses https -> http unless allowDowngrade", () =>
    Effect.gen(function* () {
      const { b, seenB } = yield* twoOrigins
      const port = yield* Effect.acquireRelease(
        Effect.promise(
          () =>
            new Promise<{ server: ReturnType<typeof createHttpsServer>; port: number }>((resolve) => {
              const server = createHttpsServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) =>
                to(res, 302, `${b.url}/echo`)
              )
              server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as AddressInfo).port }))
            })
        ),
        ({ server }) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      ).pipe(Effect.map(({ port }) => port))
      const secure = `https://localhost:${port}/old`
      const refused = redirectError(yield* Effect.flip(Http.getText(secure)))
      assert.strictEqual(refused.reason, "downgrade")
      assert.deepStrictEqual(refused.chain, [secure])
      assert.deepStrictEqual(seenB, [])
      assert.strictEqual(yield* Http.getText(secure).pipe(Redirects.withOptions({ allowDowngrade: true })), "b")
      assert.strictEqual(seenB.length, 1)
    }).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer({ tls: { ca: pki.ca } })))
  )
})
