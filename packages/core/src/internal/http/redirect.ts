// Following redirects, for every volley request (`Http.*` and every `Fanout` form), inside the
// one exchange they share (./exchange.ts): a 301/302/303/307/308 with a `Location` is answered
// by the next hop, run like a request of its own (under the retry policy, on the client in the
// environment, so proxy routing picks the hop's own origin), its response handed to the same
// handler. Only the non-2xx branch of a response ever gets here: the plain path costs nothing.
//
// The chain so far (its hops, whether it crossed origins) travels with the fiber (`Chain`,
// provided around each hop), not on request or response objects, which a client's transforms
// may copy.
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as HttpBody from "effect/http/HttpBody"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type { HttpMethod } from "effect/http/HttpMethod"
import * as UrlParams from "effect/http/UrlParams"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Validate from "../options.ts"
import { redactInput } from "../proxy/url.ts"
import { HopStrip, unwrap } from "../retry/client.ts"
import type { RetryError } from "../retry/errors.ts"
import * as Loop from "../retry/loop.ts"
import { markFinal, RetryPolicy, type RunOptions } from "../retry/policy.ts"
import { isReplayable } from "../retry/replay.ts"
import { redactUrl } from "../url.ts"
import { drain, exchange } from "./exchange.ts"
import * as Metrics from "./metrics.ts"
import { isToken } from "./token.ts"

/**
 * Why a redirect was not followed: `"too-many"` (more hops than `maxRedirects`), `"loop"` (a hop
 * back to a URL already visited with the same method), `"downgrade"` (`https:` to `http:`
 * without `allowDowngrade`), `"unsupported-scheme"` (a `Location` to `file:`, `ftp:`, `data:`...),
 * `"invalid-location"` (a `Location` that is not a URL), `"body-not-replayable"` (a 307/308
 * asks to send again a body that was a stream, already used up).
 *
 * @since 0.1.0
 * @category models
 */
export type RedirectReason =
  | "too-many"
  | "loop"
  | "downgrade"
  | "unsupported-scheme"
  | "invalid-location"
  | "body-not-replayable"

interface RedirectErrorProps {
  readonly reason: RedirectReason
  readonly method: string
  readonly status: number
  readonly location: string
  readonly chain: ReadonlyArray<string>
}

/**
 * A redirect could not be followed. `chain` holds every URL requested so far, the first one
 * first (user info removed), `location` the refused `Location` (user info masked), `status`
 * the redirect's status; the query parameters named in `UrlParams.CurrentRedactedNames` are
 * redacted in both (those of the fiber that builds the error; Effect's defaults outside one).
 * Never retried.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http } from "@volley/core"
 *
 * const program = Http.getText("http://127.0.0.1:8080/old").pipe(
 *   Effect.catchTag("RedirectError", (e) => Effect.succeed(`${e.reason}: ${e.chain.join(" -> ")}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RedirectError extends Data.TaggedError("RedirectError")<RedirectErrorProps> {
  constructor(props: RedirectErrorProps) {
    super({
      ...props,
      location: redactUrl(props.location),
      chain: props.chain.map((url) => redactUrl(url))
    })
  }
  override get message(): string {
    const why = {
      "too-many": "too many redirects",
      loop: "redirect loop",
      downgrade: "redirect from https to http refused (allowDowngrade is off)",
      "unsupported-scheme": "redirect to a scheme other than http or https",
      "invalid-location": "Location is not a URL",
      "body-not-replayable": `${this.status} asks to send the body again, but it was a stream and is used up`
    }[this.reason]
    return `${this.method} ${this.chain.join(" -> ")}: ${why} (${this.status} to ${this.location})`
  }
}

/**
 * Redirect options. Every field is optional.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Most redirects followed for one request; `0` turns following off (a 3xx is then a
   * `StatusCodeError`, as any non-2xx).
   * @default 10
   */
  readonly maxRedirects?: number | undefined
  /**
   * Follow a redirect from `https:` to `http:`. Off: such a hop fails with `RedirectError`.
   * @default false
   */
  readonly allowDowngrade?: boolean | undefined
  /**
   * Request headers dropped, besides `authorization`, `cookie` and `proxy-authorization`, when
   * a redirect goes to another origin (scheme, host or port): an API key header, say.
   * Case-insensitive.
   * @default []
   */
  readonly sensitiveHeaders?: ReadonlyArray<string> | undefined
}

/**
 * A validated redirect policy; build one with `Redirects.make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Policy {
  readonly maxRedirects: number
  readonly allowDowngrade: boolean
  /** Lower case, the three always dropped included. */
  readonly sensitiveHeaders: ReadonlySet<string>
}

const ALWAYS_SENSITIVE = ["authorization", "cookie", "proxy-authorization"] as const

/**
 * Validates redirect options. Fails with `InvalidOptionsError` naming the bad option.
 *
 * @example
 * ```ts
 * import { Redirects } from "@volley/core"
 *
 * const policy = Redirects.make({ maxRedirects: 5, sensitiveHeaders: ["x-api-key"] })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Policy, Validate.InvalidOptionsError> =>
  Effect.gen(function* () {
    yield* Validate.record("options", options)
    const maxRedirects = yield* Validate.positiveInt("maxRedirects", options.maxRedirects ?? 10, 0)
    const allowDowngrade = yield* Validate.oneOf("allowDowngrade", options.allowDowngrade ?? false, [true, false])
    const sensitiveHeaders = new Set<string>(ALWAYS_SENSITIVE)
    // An array, not any iterable: "x-api-key" would be taken for its characters, and the real
    // header would go on to another origin.
    for (const header of yield* Validate.array("sensitiveHeaders", options.sensitiveHeaders ?? [])) {
      if (typeof header !== "string" || !isToken(header)) {
        return yield* new Validate.InvalidOptionsError({
          option: "sensitiveHeaders",
          reason: `must hold header names, got ${JSON.stringify(header)}`
        })
      }
      sensitiveHeaders.add(header.toLowerCase())
    }
    return { maxRedirects, allowDowngrade, sensitiveHeaders } satisfies Policy
  })

/**
 * The redirect policy in effect. A reference: without a layer, redirects are followed (10 at
 * most, no `https:` to `http:`, credentials dropped across origins).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Redirects } from "@volley/core"
 *
 * const max = Effect.map(Redirects.RedirectPolicy, (policy) => policy.maxRedirects) // 10
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export const RedirectPolicy: Context.Reference<Policy> = Context.Reference<Policy>(
  "@volley/core/Redirects/RedirectPolicy",
  { defaultValue: () => Effect.runSync(make()) }
)

interface Hop {
  readonly method: HttpMethod
  readonly url: string
}

interface ChainState {
  /** The requests made so far for one call, the first one first; empty outside a redirect. */
  readonly hops: ReadonlyArray<Hop>
  /** Whether a hop went to another origin: every later hop then runs on a client that strips. */
  readonly crossed: boolean
}

const NO_CHAIN: ChainState = { hops: [], crossed: false }

const Chain = Context.Reference<ChainState>("@volley/core/Redirects/Chain", { defaultValue: () => NO_CHAIN })

/**
 * Set by a batch with per-host limits, on each worker: waits for a slot at a hop's origin for
 * the item the worker runs (see `Scheduler.moveTo`), so every hop keeps to its own origin's limit.
 */
export const HopGate = Context.Reference<((url: string) => Effect.Effect<void>) | undefined>(
  "@volley/core/Redirects/HopGate",
  { defaultValue: () => undefined }
)

/**
 * Set by a batch with progress events, once per batch: called as each retry of a redirect hop is
 * decided, as the item's own retries call theirs, so `Progress.retried` counts both. A request a
 * `read` makes runs under it too: its hops' retries count as well (its own do not).
 */
export const HopRetry = Context.Reference<(() => void) | undefined>("@volley/core/Redirects/HopRetry", {
  defaultValue: () => undefined
})

/** The URLs each final response was reached through (see `Redirects.chain`). */
const chains = new WeakMap<HttpClientResponse.HttpClientResponse, ReadonlyArray<string>>()

/** The URLs requested to reach `response`, the first one first; `[its URL]` if none redirected. */
export const chainOf = (response: HttpClientResponse.HttpClientResponse): ReadonlyArray<string> => {
  const chain = chains.get(response)
  if (chain !== undefined) return chain
  const url = sentUrl(response.request)
  return [url === undefined ? response.request.url : show(url)]
}

const FOLLOWED: ReadonlySet<number> = new Set([301, 302, 303, 307, 308])

/** Whether a non-2xx `response` is a redirect to follow (the policy decides later whether it may). */
export const isRedirect = (response: HttpClientResponse.HttpClientResponse): boolean =>
  FOLLOWED.has(response.status) && response.headers.location !== undefined

/**
 * Follows the redirect `response` answers: checks the hop, drains the redirect's body, and runs
 * the next request under the retry policy, its response handed to `handle` (which follows
 * further redirects). A hop's failure that its retries could not fix is final: the first
 * request's own retries do not run the whole chain again. `otherwise` runs when following is off.
 */
export const follow = <A, E, R, E2>(
  response: HttpClientResponse.HttpClientResponse,
  handle: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
  otherwise: () => Effect.Effect<never, E2>
): Effect.Effect<A, E | E2 | RedirectError | RetryError | HttpClientError.HttpClientError, R | HttpClient.HttpClient> =>
  Effect.withFiber(
    (
      fiber
    ): Effect.Effect<
      A,
      E | E2 | RedirectError | RetryError | HttpClientError.HttpClientError,
      R | HttpClient.HttpClient
    > => {
      const policy = fiber.getRef(RedirectPolicy)
      const request = response.request
      // Typed as a string by the request; one of HttpMethod's when a client sent it.
      const requested = request.method as HttpMethod
      const from = sentUrl(request)
      if (policy.maxRedirects === 0 || from === undefined) return otherwise()
      const state = fiber.getRef(Chain)
      const hops: ReadonlyArray<Hop> = state.hops.length > 0 ? state.hops : [{ method: requested, url: show(from) }]
      const location = asUtf8(response.headers.location!)
      const fail = (reason: RedirectReason) =>
        Effect.flatMap(drain(response), () =>
          Effect.fail(
            new RedirectError({
              reason,
              method: hops[0]!.method,
              status: response.status,
              location: redactInput(location),
              chain: hops.map((hop) => hop.url)
            })
          )
        )
      const target = URL.parse(location, from)
      if (target === null) return fail("invalid-location")
      if (target.protocol !== "http:" && target.protocol !== "https:") return fail("unsupported-scheme")
      if (from.protocol === "https:" && target.protocol === "http:" && !policy.allowDowngrade) return fail("downgrade")
      if (hops.length > policy.maxRedirects) return fail("too-many")
      // 303 asks for a GET (a HEAD stays one); browsers and every client do the same for a POST
      // answered by 301/302. 307/308 (and 301/302 to other methods) send the same request again.
      const method: HttpMethod =
        response.status === 303
          ? requested === "HEAD"
            ? "HEAD"
            : "GET"
          : (response.status === 301 || response.status === 302) && requested === "POST"
            ? "GET"
            : requested
      const keepsBody = method === requested && method !== "GET" && method !== "HEAD"
      if (keepsBody && !isReplayable(request)) return fail("body-not-replayable")
      // Credentials in a Location are never sent on: neither as user info nor as Authorization.
      target.username = ""
      target.password = ""
      const url = show(target)
      if (hops.some((hop) => hop.url === url && hop.method === method)) return fail("loop")
      let next = toHop(request, target)
      // A client may have added trace context to the request for the previous hop, naming that
      // hop's span; the next hop's client adds its own (its span's, or the enclosing span's for
      // a hop it does not trace), or none: the previous hop's must not reach it. A response that
      // says its request carries the caller's headers only (NodeHttpClient's) keeps them all.
      if (!(CallerHeadersKey in response)) next = withoutHeaders(next, TRACE_HEADERS)
      if (method !== requested || (!keepsBody && request.body._tag !== "Empty")) {
        // The body is dropped, and with it the headers describing it (as Fetch does); setBody
        // removes Content-Type and Content-Length.
        if (method !== requested) next = HttpClientRequest.setMethod(next, method)
        next = withoutHeaders(HttpClientRequest.setBody(next, HttpBody.empty), BODY_HEADERS)
      }
      const crossed = state.crossed || target.origin !== from.origin
      if (target.origin !== from.origin) next = stripSensitive(next, policy)
      const nextState: ChainState = { hops: [...hops, { method, url }], crossed }
      const chain = nextState.hops.map((hop) => hop.url)
      const final = (response: HttpClientResponse.HttpClientResponse) => {
        chains.set(response, chain)
        // Only a further redirect continues this chain; a `read` (which may make requests of
        // its own) runs outside it.
        return isRedirect(response) ? handle(response) : Effect.provideService(handle(response), Chain, NO_CHAIN)
      }
      const gate = fiber.getRef(HopGate)
      // `volley_http_redirects_total`, by the origin of the target.
      const drained = Effect.andThen(
        drain(response),
        Metric.update(Metric.withAttributes(Metrics.redirects, { origin: target.origin }), 1)
      )
      return Effect.flatMap(gate === undefined ? drained : Effect.andThen(drained, gate(target.href)), () =>
        Effect.flatMap(HttpClient.HttpClient, (client) =>
          Effect.provideService(
            Effect.tapError(
              Loop.run(
                fiber.getRef(RetryPolicy),
                next,
                exchange(crossed ? stripping(unwrap(client), policy) : unwrap(client), next, final),
                hopOptions(fiber)
              ),
              markFinal
            ),
            Chain,
            nextState
          )
        )
      )
    }
  )

// The trace context headers Effect's clients add (a `tracestate` is always the caller's).
const TRACE_HEADERS = ["traceparent", "b3"] as const

/** Where a response says its `request` carries its caller's headers only (see NodeHttpClient). */
const CallerHeadersKey = Symbol.for("@volley/core/HttpClientResponse/callerHeaders")

// Fetch's request-body headers besides Content-Type and Content-Length, which setBody removes.
const BODY_HEADERS = ["content-encoding", "content-language", "content-location", "content-type"] as const

// Drops what must not reach another origin: the policy's sensitive headers, and a Host set by
// hand (it names the old origin).
const stripSensitive = (
  request: HttpClientRequest.HttpClientRequest,
  policy: Policy
): HttpClientRequest.HttpClientRequest =>
  withoutHeaders(
    request,
    Object.keys(request.headers).filter((header) => header === "host" || policy.sensitiveHeaders.has(header))
  )

// `request` without those of `headers` it has (as it is when it has none of them).
const withoutHeaders = (
  request: HttpClientRequest.HttpClientRequest,
  headers: ReadonlyArray<string>
): HttpClientRequest.HttpClientRequest => {
  let kept = request
  for (const header of headers) {
    if (kept.headers[header] !== undefined) kept = HttpClientRequest.removeHeader(kept, header)
  }
  return kept
}

// Once a chain has crossed origins, every later hop runs on `client` with the same headers
// dropped after the client's own transforms (`HttpClient.mapRequest` appends to them), which
// would otherwise put an `Authorization` back. The client under a `Retry.withPolicy` wrapper
// keeps its transforms, so they are stripped as well: by the wrapper itself (see `HopStrip`)
// when a transform above it hides it from `unwrap`.
const stripping = <E, R>(
  client: HttpClient.HttpClient.With<E, R>,
  policy: Policy
): HttpClient.HttpClient.With<E, R> => {
  const strip = (request: HttpClientRequest.HttpClientRequest) => stripSensitive(request, policy)
  return HttpClient.transformResponse(HttpClient.mapRequest(client, strip), (effect) =>
    Effect.provideService(effect, HopStrip, strip)
  )
}

// The request for a hop to `target`, its URL exactly as the URL parser wrote the Location.
// `setUrl` with a URL object would split the query into url params, sent written back
// form-encoded (`%20` as `+`, `?flag` as `?flag=`, `/` and `~` escaped): another URL than the
// one the server named, which a signed URL's signature does not cover. The first request's
// url params go too: the Location replaces its whole query.
const toHop = (request: HttpClientRequest.HttpClientRequest, target: URL): HttpClientRequest.HttpClientRequest => {
  const hash = target.hash
  return HttpClientRequest.makeWith(
    request.method,
    hash === "" ? target.href : target.href.slice(0, -hash.length),
    UrlParams.empty,
    hash === "" ? Option.none() : Option.some(hash.slice(1)),
    request.headers,
    request.body
  )
}

// A Location as the client hands it: a header's bytes, one character each (latin1), so raw
// UTF-8 (`/café` sent unencoded, as many servers do) reads as `/cafÃ©`. As undici's fetch
// (`normalizeBinaryStringToUtf8`) and browsers do, such bytes are decoded as UTF-8 (an invalid
// sequence becoming U+FFFD) before the URL is parsed. A string with a character past 0xFF was
// decoded already and is kept.
const asUtf8 = (location: string): string => {
  let binary = false
  for (let i = 0; i < location.length; i++) {
    const code = location.charCodeAt(i)
    if (code > 0xff) return location
    if (code > 0x7f) binary = true
  }
  if (!binary) return location
  const bytes = new Uint8Array(location.length)
  for (let i = 0; i < location.length; i++) bytes[i] = location.charCodeAt(i)
  return utf8.decode(bytes)
}

// `ignoreBOM` keeps a leading BOM, as Buffer's decoding (undici's) does.
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true })

// A hop keeps to the deadline of the request it continues (a batch's, the policy's timeout), and
// reports its retries where the batch's go. In an attempt timed on its clock (see
// `Loop.AttemptClock`), whose end moves with its waits, it also keeps to the time that attempt
// has left, read as each of its retries is decided (a plain timed attempt's end is its deadline).
const hopOptions = (fiber: Fiber.Fiber<unknown, unknown>): RunOptions | undefined => {
  const deadline = fiber.getRef(Loop.CurrentDeadline)
  const onRetry = fiber.getRef(HopRetry)
  const within = fiber.getRef(Loop.AttemptClock)
  if (within !== undefined && within !== Loop.UNTIMED) {
    const options: Loop.HopRunOptions =
      deadline === Number.POSITIVE_INFINITY ? { onRetry, within } : { deadline, onRetry, within, enclosed: true }
    return options
  }
  if (deadline === Number.POSITIVE_INFINITY) return onRetry === undefined ? undefined : { onRetry }
  // The deadline is the enclosing attempt's, which its own timers enforce.
  const options: Loop.HopRunOptions = { deadline, onRetry, enclosed: true }
  return options
}

// The URL a request went to: its URL with its query parameters (undefined for a relative URL,
// which a client that resolved it did not hand back).
const sentUrl = (request: HttpClientRequest.HttpClientRequest): URL | undefined =>
  Option.getOrUndefined(HttpClientRequest.toUrl(request))

// As a URL appears in a chain or an error: without user info.
const show = (url: URL): string => {
  if (url.username === "" && url.password === "") return url.href
  const copy = new URL(url.href)
  copy.username = ""
  copy.password = ""
  return copy.href
}
