/**
 * Everyday HTTP calls as Effects, on Effect's own `HttpClient`.
 *
 * Each helper builds a request, runs it through whatever `HttpClient` the
 * environment provides (undici from `@volley/node`, `fetch`, a proxied or
 * retrying client), treats a non-2xx status as an error and reads the body in
 * the shape you ask for. Every failure is Effect's `HttpClientError`, whose
 * `reason` says what went wrong (`InvalidUrlError`, `TransportError`,
 * `StatusCodeError`, `DecodeError`, ...) and names the request, or one of the
 * retry policy's own errors ({@link Retry.RetryError}).
 *
 * Retries follow one rule for every volley request, these helpers and `Fanout`
 * batches alike: each request runs, body read included, under the
 * `Retry.RetryPolicy` in the environment (by default 3 retries of transport
 * errors and 408/429/500/502/503/504 answers for idempotent methods or an
 * `Idempotency-Key`, with backoff and a
 * retry budget; `Retry.layer` or `Resilience.layer({ retry })` replace it,
 * `Retry.layer({ retries: 0 })` turns retrying off). A client wrapped by
 * `Retry.layerClient` is seen through, so nothing is retried twice.
 *
 * Redirects are followed (at most 10, credentials dropped across origins, no
 * `https:` to `http:`), each hop under the same retry policy; see `Redirects`
 * for the rules and how to change them.
 *
 * A body is never left holding its keep-alive connection: a non-2xx body
 * announced as at most 64 KiB is read to its end before the `StatusCodeError`
 * is returned (a larger or unannounced one, or one still arriving after a
 * second, is aborted, closing its connection), and a body that a
 * `read` leaves unread (it fails, is interrupted, or ignores the body) is
 * discarded when the call ends. This needs no `Scope` per call: these helpers
 * run the same exchange as a `Fanout` batch's first attempt.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as HttpBody from "effect/http/HttpBody"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Metric from "effect/Metric"
import type * as Schema from "effect/Schema"
import { refused } from "./internal/http/arguments.ts"
import * as Exchange from "./internal/http/exchange.ts"
import { readJson } from "./internal/http/json.ts"
import * as Metrics from "./internal/http/metrics.ts"
import { unwrap } from "./internal/retry/client.ts"
import { runOn } from "./internal/retry/loop.ts"
import { type Policy, RetryPolicy } from "./internal/retry/policy.ts"
import * as Url from "./internal/url.ts"
import type * as Redirects from "./Redirects.ts"
import type * as Retry from "./Retry.ts"

/**
 * Per-call options shared by every helper. `null` (from JavaScript) counts as unset, for the
 * options and for each field; a URL that is not a string or `URL`, or options, `headers` or
 * `urlParams` that are not objects, fail the call with an `HttpClientError` (`InvalidUrlError`,
 * `EncodeError`) caused by an `Options.InvalidOptionsError` naming it, before anything is sent.
 *
 * @example
 * ```ts
 * import { Http } from "@volley/core"
 *
 * const options: Http.RequestOptions = { headers: { "user-agent": "volley" }, urlParams: { page: "2" } }
 * const page = Http.getText("https://example.com/items", options) // GET https://example.com/items?page=2
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestOptions {
  /** Extra request headers; a `Content-Type` among them is sent with a POST body in place of its default. */
  readonly headers?: Record<string, string> | undefined
  /** Query parameters appended to the URL. */
  readonly urlParams?: Record<string, string> | undefined
}

/**
 * Runs a request, fails on a non-2xx status, and reads the response with `read`.
 * The building block of the other helpers; use it for methods or bodies they don't cover.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HttpClientRequest } from "effect/http"
 * import { Http } from "@volley/core"
 *
 * const status = Http.send(HttpClientRequest.delete("http://127.0.0.1:8080/items/1"), (res) => Effect.succeed(res.status))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const send = <A, E, R>(
  request: HttpClientRequest.HttpClientRequest,
  read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
): Effect.Effect<
  A,
  E | HttpClientError.HttpClientError | Retry.RetryError | Redirects.RedirectError,
  R | HttpClient.HttpClient
> =>
  run(
    request,
    Exchange.onResponse((response) => Effect.ensuring(read(response), Exchange.release(response)), true)
  )

/**
 * GET a URL and read the body as text.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeHttpClient } from "@volley/node"
 * import { Http } from "@volley/core"
 *
 * const program = Http.getText("http://127.0.0.1:8080/health").pipe(Effect.provide(NodeHttpClient.layer()))
 * ```
 *
 * @since 0.1.0
 * @category GET
 */
export const getText = (
  url: string | URL,
  options?: RequestOptions
): Effect.Effect<
  string,
  HttpClientError.HttpClientError | Retry.RetryError | Redirects.RedirectError,
  HttpClient.HttpClient
> => refused(url, options, HttpClientRequest.empty) ?? run(build("GET", url, options), onText)

/**
 * GET a URL and read the body as bytes.
 *
 * @example
 * ```ts
 * import { Http } from "@volley/core"
 *
 * // Effect<Uint8Array, HttpClientError | RetryError | RedirectError, HttpClient>
 * const bytes = Http.getBytes("http://127.0.0.1:8080/logo.png")
 * ```
 *
 * @since 0.1.0
 * @category GET
 */
export const getBytes = (
  url: string | URL,
  options?: RequestOptions
): Effect.Effect<
  Uint8Array,
  HttpClientError.HttpClientError | Retry.RetryError | Redirects.RedirectError,
  HttpClient.HttpClient
> => refused(url, options, HttpClientRequest.empty) ?? run(build("GET", url, options), onBytes)

/**
 * GET a URL and decode its JSON body with `schema`. A body that is not JSON or
 * does not match the schema fails with an `HttpClientError` whose reason is a
 * `DecodeError` naming the request; the `SchemaError` is its `cause`.
 * An empty body (a 204, say) decodes as `null`: give a schema that takes it
 * (`Schema.Null`, `Schema.NullOr(User)`) where the origin may send none.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Http } from "@volley/core"
 *
 * const User = Schema.Struct({ id: Schema.Number, name: Schema.String })
 * const user = Http.getJson("http://127.0.0.1:8080/users/1", User)
 * ```
 *
 * @since 0.1.0
 * @category GET
 */
export const getJson = <S extends Schema.Constraint>(url: string | URL, schema: S, options?: RequestOptions) =>
  refused(url, options, HttpClientRequest.empty) ??
  run(
    options == null
      ? HttpClientRequest.setUrl(JSON_GET, Url.urlText(url))
      : build("GET", url, { ...options, headers: { accept: "application/json", ...options.headers } }),
    onJson(schema)
  )

/**
 * POST a text body and read the response as text.
 *
 * @example
 * ```ts
 * import { Http } from "@volley/core"
 *
 * const echoed = Http.postText("http://127.0.0.1:8080/echo", "hello")
 * ```
 *
 * @since 0.1.0
 * @category POST
 */
export const postText = (url: string | URL, body: string, options?: RequestOptions) =>
  refused(url, options, EMPTY_POST) ??
  run(HttpClientRequest.bodyText(build("POST", url, options), body, contentTypeOf(options)), onText)

/**
 * POST a binary body and read the response as bytes.
 *
 * @example
 * ```ts
 * import { Http } from "@volley/core"
 *
 * const echoed = Http.postBytes("http://127.0.0.1:8080/echo", new Uint8Array([1, 2, 3]))
 * ```
 *
 * @since 0.1.0
 * @category POST
 */
export const postBytes = (url: string | URL, body: Uint8Array, options?: RequestOptions) =>
  refused(url, options, EMPTY_POST) ??
  run(HttpClientRequest.bodyUint8Array(build("POST", url, options), body, contentTypeOf(options)), onBytes)

/**
 * POST a JSON body and decode the JSON response with `schema`. A body that
 * cannot be encoded as JSON (a `bigint`, a cycle; `undefined`, a function or a
 * symbol, which have no JSON text) fails with an `HttpClientError` whose reason
 * is an `EncodeError`, before any network call.
 * An empty response (a 204, say) decodes as `null`, as with {@link getJson}:
 * `Schema.Null` as the schema where the endpoint answers with no body.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Http } from "@volley/core"
 *
 * const Created = Schema.Struct({ id: Schema.Number })
 * const created = Http.postJson("http://127.0.0.1:8080/users", { name: "Ada" }, Created)
 * ```
 *
 * @since 0.1.0
 * @category POST
 */
export const postJson = <S extends Schema.Constraint>(
  url: string | URL,
  body: unknown,
  schema: S,
  options?: RequestOptions
) => {
  const refusal = refused(url, options, EMPTY_POST)
  if (refusal !== undefined) return refusal
  const request = build("POST", url, { ...options, headers: { accept: "application/json", ...options?.headers } })
  return HttpBody.json(body, contentTypeOf(options)).pipe(
    Effect.map((json) => HttpClientRequest.setBody(request, json)),
    Effect.flatMap((withBody) =>
      // `JSON.stringify` gives no text at all (rather than throwing) for `undefined`, a function,
      // a symbol or a `toJSON` that returns one of them: Effect then sends an empty body as
      // `application/json`. No JSON text is empty, so an empty body means nothing to send.
      withBody.body._tag === "Uint8Array" && withBody.body.body.byteLength === 0
        ? Effect.fail(
            new HttpBody.HttpBodyError({
              reason: { _tag: "JsonError" },
              cause: new TypeError(`JSON.stringify gives no text for ${describeJson(body)}`)
            })
          )
        : Effect.succeed(withBody)
    ),
    Effect.mapError(
      (cause) => new HttpClientError.HttpClientError({ reason: new HttpClientError.EncodeError({ request, cause }) })
    ),
    Effect.flatMap((withBody) => run(withBody, onJson(schema)))
  )
}

const describeJson = (body: unknown): string =>
  body === undefined ? "undefined" : typeof body === "object" ? "a value whose toJSON gives none" : `a ${typeof body}`

/**
 * Reads a response's body as bytes, with no copy where the client allows it (volley's
 * `NodeHttpClient` hands out a body that arrived in one piece as a view of it). What
 * {@link getBytes} and a `Fanout` batch's default read use; pass it as a batch's `read` to
 * build on it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout, Http } from "@volley/core"
 *
 * const sizes = Fanout.all(["http://127.0.0.1:8080/a"], {
 *   read: (response) => Effect.map(Http.readBytes(response), (bytes) => bytes.byteLength)
 * })
 * ```
 *
 * @since 0.1.0
 * @category readers
 */
export const readBytes: (
  response: HttpClientResponse.HttpClientResponse
) => Effect.Effect<Uint8Array, HttpClientError.HttpClientError> = Exchange.readBytes

/**
 * Reads a response's body as text (UTF-8), as `response.text` does. What {@link getText} uses;
 * as a `Fanout` batch's `read` it keeps the batch on its fastest path on `NodeHttpClient` (a
 * worker settles a body that arrived whole without resuming its fiber), where a function of
 * your own, `(response) => response.text` included, runs on the worker's fiber.
 *
 * @example
 * ```ts
 * import { Fanout, Http } from "@volley/core"
 *
 * const pages = Fanout.allSettled(["http://127.0.0.1:8080/a", "http://127.0.0.1:8080/b"], {
 *   concurrency: 16,
 *   read: Http.readText
 * })
 * ```
 *
 * @since 0.1.0
 * @category readers
 */
export const readText: (
  response: HttpClientResponse.HttpClientResponse
) => Effect.Effect<string, HttpClientError.HttpClientError> = Exchange.readText

/**
 * A URL as volley's errors and spans show it: its user info reads `REDACTED:REDACTED` (in a URL
 * that does not parse too, where a password holding a `/`, `?`, `#` or `\` would otherwise
 * show: `http://user:pa/ss@host/`), and the query parameters in `names` (by default the fiber's
 * `UrlParams.CurrentRedactedNames`) read `REDACTED`. For a URL of your own in a log line or an
 * error: Effect's `UrlParams.redactUrl` with that one case added.
 *
 * @example
 * ```ts
 * import { Http } from "@volley/core"
 *
 * const shown = Http.redactUrl("http://user:pa/ss@example.com/?Signature=abc")
 * // "http://REDACTED:REDACTED@example.com/?Signature=REDACTED"
 * ```
 *
 * @since 0.1.0
 * @category utils
 */
export const redactUrl: (url: string, names?: ReadonlyArray<string | RegExp>) => string = Url.redactUrl

/**
 * What volley does to requests above the client, as counters with an `origin` attribute:
 * `volley_http_retries_total` (requests sent again by the retry policy, by their origin) and
 * `volley_http_redirects_total` (redirects followed, by the origin of their target). They count
 * for `Http.*` and every `Fanout` form, whatever the client; the client's own metrics (requests,
 * duration, in flight, bytes) are `NodeHttpClient.metrics` in `@volley/node`.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Http } from "@volley/core"
 *
 * const retried = Metric.value(Metric.withAttributes(Http.metrics.retries, { origin: "http://127.0.0.1:8080" }))
 * ```
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics: {
  readonly retries: Metric.Counter<number>
  readonly redirects: Metric.Counter<number>
} = { retries: Metrics.retries, redirects: Metrics.redirects }

// A call without options (most are) builds its request in one step, from an empty one of its
// method: `make` builds three and copies its options twice.
// `null` options (from JavaScript) are none, as a `null` field is unset.
const build = (method: "GET" | "POST", url: string | URL, options: RequestOptions | undefined) =>
  options == null
    ? HttpClientRequest.setUrl(method === "GET" ? HttpClientRequest.empty : EMPTY_POST, Url.urlText(url))
    : withParams(
        HttpClientRequest.make(method)(Url.urlText(url), options.headers == null ? {} : { headers: options.headers }),
        options.urlParams ?? undefined
      )

// Appended after the URL's own query, which stays as written (a `URL` object is passed as its
// text, see `urlText`), a parameter of the same name included.
const withParams = (
  request: HttpClientRequest.HttpClientRequest,
  urlParams: Record<string, string> | undefined
): HttpClientRequest.HttpClientRequest =>
  urlParams === undefined ? request : HttpClientRequest.appendUrlParams(request, urlParams)

// The Content-Type a caller's headers name, any case, for the body: setting a body sets its
// own Content-Type over the request's (text/plain, application/json...), which would replace
// the caller's (application/merge-patch+json, text/csv).
const contentTypeOf = (options: RequestOptions | undefined): string | undefined => {
  let found: string | undefined
  if (options?.headers !== undefined) {
    for (const name in options.headers) if (name.toLowerCase() === "content-type") found = options.headers[name]
  }
  return found
}

const EMPTY_POST = HttpClientRequest.setMethod(HttpClientRequest.empty, "POST")
const JSON_GET = HttpClientRequest.setHeader(HttpClientRequest.empty, "accept", "application/json")

// A schema's exchange, built once as its read is (see `readJson`), not per call.
const jsonHandles = new WeakMap<Schema.Constraint, Exchange.Read<unknown, unknown, unknown>>()
const onJson = <S extends Schema.Constraint>(schema: S) => {
  let handle = jsonHandles.get(schema)
  if (handle === undefined) {
    handle = Exchange.onResponse(readJson(schema), true) as Exchange.Read<unknown, unknown, unknown>
    jsonHandles.set(schema, handle)
  }
  return handle as Exchange.Read<
    S["Type"],
    HttpClientError.HttpClientError | Retry.RetryError | Redirects.RedirectError,
    S["DecodingServices"] | HttpClient.HttpClient
  >
}

// The exchange (status check and body read included) under the policy in the environment, on
// the client under a `Retry.withPolicy` wrapper if there is one: what a batch runs per item.
const run = <A, E, R>(
  request: HttpClientRequest.HttpClientRequest,
  handle: Exchange.Read<A, E, R>
): Effect.Effect<
  A,
  E | HttpClientError.HttpClientError | Retry.RetryError | Redirects.RedirectError,
  R | HttpClient.HttpClient
> =>
  // One step finds the client, the policy and the fiber: the idiom runs this once per request.
  Effect.withFiber((fiber) => {
    const found = servicesOf(fiber.context)
    return runOn(
      fiber,
      found.policy,
      request,
      Exchange.exchange(found.client, request, handle, fiber),
      undefined,
      found.clock
    )
  })

// What `run` reads of its fiber's context, read again only when the context changes: a context
// never changes (providing a service makes a new one) and the fibers of `Effect.forEach` share
// their parent's. The last context's is kept until a call in another context replaces it (one,
// not a map: a `WeakMap` insert costs more than the lookups where each call has its own context),
// the context and its client weakly: held for good, they and all they reach (a layer's client, a
// batch's state) lived on until a call in another context came, perhaps never.
class RunServices {
  readonly context: WeakRef<Context.Context<never>>
  private readonly clientRef: WeakRef<HttpClient.HttpClient>
  readonly policy: Policy
  readonly clock: Clock.Clock
  constructor(context: Context.Context<never>) {
    this.context = new WeakRef(context)
    this.clientRef = new WeakRef(unwrap(Context.getUnsafe(context, HttpClient.HttpClient)))
    this.policy = Context.get(context, RetryPolicy)
    this.clock = Context.get(context, Clock.Clock)
  }
  /** Alive while the context is, which holds it: so whenever these services are used. */
  get client(): HttpClient.HttpClient {
    return this.clientRef.deref()!
  }
}
let last: RunServices | undefined
const servicesOf = (context: Context.Context<never>): RunServices => {
  if (last?.context.deref() !== context) last = new RunServices(context)
  return last
}

// Built once: the hot path allocates only the request and its effects.
const onText = Exchange.onResponse(Exchange.readText, true)
const onBytes = Exchange.onResponse(Exchange.readBytes, true)
