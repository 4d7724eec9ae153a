// The client span of a request `@volley/core` sends and reads itself (`Http.*`, a traced batch's
// attempts), made here rather than by Effect's `HttpClient.make`: the same span (name, kind,
// attributes, status, trace headers), without what that wrapper adds for a response a caller may
// leave unread (an `AbortController`, a `FinalizationRegistry` entry, a response wrapper, two
// `WeakMap` entries), which cost about twice the span itself under OpenTelemetry. The span ends
// with the response head, as Effect's does; the body is read after it, in the caller's span.
import * as Retry from "@volley/core/Retry"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Headers from "effect/http/Headers"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as UrlParams from "effect/http/UrlParams"
import * as References from "effect/References"
import type * as Tracer from "effect/Tracer"
import { Head, TraceHeaders } from "./dispatch.ts"

/** Extra attributes for a request's span, from its URL (`NodeProxy` adds the route). */
export type Annotate = ((url: URL) => Record<string, unknown>) | undefined

/**
 * Runs `send` (the request, up to its response head) in a client span of its own, as Effect's
 * `HttpClient.make` would: the span's trace context goes on the wire (`send`'s argument) unless
 * `HttpClient.TracerPropagationEnabled` is off.
 */
export const clientSpan = (
  request: HttpClientRequest.HttpClientRequest,
  url: URL,
  fiber: Fiber.Fiber<unknown, unknown>,
  annotate: Annotate,
  send: (
    trace: TraceHeaders | undefined,
    head: Head
  ) => Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>
): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> =>
  Effect.useSpan(fiber.getRef(HttpClient.SpanNameGenerator)(request), { kind: "client" }, (span) => {
    span.attribute("http.request.method", request.method)
    addUrlAttributes(span, url, redactedNames(request.urlParams, fiber.getRef(UrlParams.CurrentRedactedNames)))
    const filter = fiber.getRef(HttpClient.TracerHeaderFilter)
    const redacted = fiber.getRef(Headers.CurrentRedactedNames)
    addHeaderAttributes(span, "request", request.headers, filter, redacted)
    if (annotate !== undefined) for (const [key, value] of Object.entries(annotate(url))) span.attribute(key, value)
    const trace = fiber.getRef(HttpClient.TracerPropagationEnabled) ? TraceHeaders.of(span) : undefined
    const head = new Head()
    return send(trace, head).pipe(
      Effect.map((response) => {
        addResponseAttributes(span, response, filter, redacted)
        // OpenTelemetry marks a client span failed for a 4xx or 5xx response, which still succeeds.
        if (response.status >= 400 && response.status < 600) {
          span.attribute("error.type", String(response.status))
          // The `StatusCodeError` a caller checking the status would see.
          endFailed(
            fiber,
            span,
            () =>
              new HttpClientError.HttpClientError({
                reason: new HttpClientError.StatusCodeError({ request, response })
              })
          )
        }
        return response
      }),
      // OpenTelemetry's HTTP conventions want `error.type` on a failed client span; Effect's
      // client sets it for a 4xx/5xx response only, not for a request that got none.
      Effect.mapError((error) => {
        span.attribute("error.type", errorType(error))
        return error
      }),
      // On the fiber the request runs on: the one given may be its caller's, outside the
      // attempt whose timeout (see `Retry.isOutOfTime`) cut it.
      Effect.onInterrupt(() =>
        Effect.withFiber((running) => {
          endInterrupted(running, span, head)
          return Effect.void
        })
      )
    )
  })

/**
 * Ends the client span of a request interrupted before its response was handed over as failed,
 * with its `error.type`: `timeout` when volley's `attemptTimeout`, `timeout` or batch `deadline`
 * cut it, else `interrupted` (an `Effect.timeout` of the caller's own, a lost race, a cancelled
 * fiber). OpenTelemetry's HTTP conventions count a cancelled request as failed; Effect's tracer
 * would end the span with its status unset (and `effect.fiber.interrupted`, kept here). A head
 * that arrived (its small body awaited) gives the span its status and headers.
 */
export const endInterrupted = (
  fiber: Fiber.Fiber<unknown, unknown>,
  span: Tracer.Span,
  head: Head | undefined
): void => {
  const response = head?.response
  if (response !== undefined) {
    addResponseAttributes(
      span,
      response,
      fiber.getRef(HttpClient.TracerHeaderFilter),
      fiber.getRef(Headers.CurrentRedactedNames)
    )
  }
  const timedOut = Retry.isOutOfTime(fiber)
  span.attribute("error.type", timedOut ? "timeout" : "interrupted")
  span.attribute("effect.fiber.interrupted", true)
  endFailed(fiber, span, () =>
    timedOut ? new Cause.TimeoutError("The request timed out") : new Error("The request was interrupted")
  )
}

// The status and the headers `HttpClient.TracerHeaderFilter` lets through of a response.
const addResponseAttributes = (
  span: Tracer.Span,
  response: HttpClientResponse.HttpClientResponse,
  filter: (name: string, phase: "request" | "response") => boolean,
  redacted: ReadonlyArray<string | RegExp>
): void => {
  span.attribute("http.response.status_code", response.status)
  addHeaderAttributes(span, "response", response.headers, filter, redacted)
}

// Effect's `url.*` and `server.*` attributes, the URL's redacted query parameters hidden.
const addUrlAttributes = (span: Tracer.Span, url: URL, redacted: ReadonlyArray<string | RegExp>): void => {
  const query = UrlParams.redactUrl(url.search, redacted).slice(1)
  span.attribute("url.full", UrlParams.redactUrl(url.href, redacted))
  span.attribute("url.path", url.pathname)
  if (query !== "") span.attribute("url.query", query)
  span.attribute("url.scheme", url.protocol.slice(0, -1))
  if (url.hostname !== "") {
    // URL keeps IPv6 brackets in the hostname; the semantic conventions do not.
    span.attribute("server.address", url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname)
    const port = url.port === "" ? DEFAULT_PORTS[url.protocol] : Number(url.port)
    if (port !== undefined) span.attribute("server.port", port)
  }
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { "http:": 80, "https:": 443 }

// The fiber's names, and the names of the request's `Redacted` URL parameters.
const redactedNames = (
  urlParams: UrlParams.UrlParams,
  names: ReadonlyArray<string | RegExp>
): ReadonlyArray<string | RegExp> => {
  const keys = urlParams.params.filter(([, value]) => typeof value !== "string").map(([key]) => key)
  return keys.length === 0 ? names : [...names, ...new URLSearchParams(keys.map((key) => [key, ""])).keys()]
}

// The headers `HttpClient.TracerHeaderFilter` lets through (none by default), redacted by name,
// and `Proxy-Authorization` always (see `PROXY_AUTHORIZATION`).
const addHeaderAttributes = (
  span: Tracer.Span,
  phase: "request" | "response",
  headers: Headers.Headers,
  filter: (name: string, phase: "request" | "response") => boolean,
  redacted: ReadonlyArray<string | RegExp>
): void => {
  for (const name in headers) {
    if (!filter(name, phase)) continue
    span.attribute(
      `http.${phase}.header.${name}`,
      name === PROXY_AUTHORIZATION || Headers.isRedactedName(name, redacted) ? "<redacted>" : headers[name]
    )
  }
}

/**
 * A request header carrying a proxy's credentials as `Authorization` carries an origin's, but
 * missing from Effect's default `Headers.CurrentRedactedNames`: a client span never shows it.
 */
export const PROXY_AUTHORIZATION = "proxy-authorization"

// Ends the span as failed with `error`, built without a stack: it is never thrown.
const endFailed = (fiber: Fiber.Fiber<unknown, unknown>, span: Tracer.Span, error: () => Error): void => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  let exit: Exit.Exit<never, Error>
  try {
    exit = Exit.fail(error())
  } finally {
    Error.stackTraceLimit = limit
  }
  const time = fiber.getRef(References.TracerTimingEnabled) ? fiber.getRef(Clock.Clock).currentTimeNanosUnsafe() : 0n
  span.end(time, exit)
}

/**
 * A failure's `error.type`: the code of the error undici failed with (`ECONNREFUSED`,
 * `UND_ERR_CONNECT_TIMEOUT`, `UND_ERR_HEADERS_TIMEOUT`...), else the reason's tag.
 */
export const errorType = (error: HttpClientError.HttpClientError): string => {
  const reason = error.reason
  return ("cause" in reason ? codeOf(reason.cause) : undefined) ?? reason._tag
}

const codeOf = (cause: unknown): string | undefined => {
  // Happy eyeballs reports one failure per address tried; the first names the problem.
  if (cause instanceof AggregateError && cause.errors.length > 0 && !hasCode(cause)) return codeOf(cause.errors[0])
  return hasCode(cause) ? cause.code : undefined
}

const hasCode = (cause: unknown): cause is { readonly code: string } =>
  typeof cause === "object" &&
  cause !== null &&
  typeof (cause as { readonly code?: unknown }).code === "string" &&
  (cause as { readonly code: string }).code !== ""
