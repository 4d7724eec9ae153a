// The client behind `NodeHttpClient.layer`. Three paths share one lean undici runner (see
// dispatch.ts):
// - traced: Effect's `HttpClient.make` around the runner, i.e. the full generic contract
//   (client span and trace headers, `HttpClient.withScope`, abort of unread bodies on GC);
// - spanned: a plain request `@volley/core` sends and reads itself (`Http.*`, a traced batch),
//   when a tracer records spans: the same client span (span.ts), without the rest of that
//   contract, which is for bodies a caller may leave unread;
// - fast: when no span would be recorded for the request: tracing off for it
//   (`HttpClient.TracerDisabledWhen` or `Tracer.DisablePropagation`, as batches set it, or
//   `References.TracerEnabled` false), or
//   Effect's default tracer in place, which records nothing (its spans are never exported; the
//   caller's trace context is still propagated). The runner alone: URL check, dispatch, abort
//   on interrupt. Profiling showed the generic wrapper (span, AbortController, the
//   AbortError's DOMException, FinalizationRegistry, response wrapper) costing about as much
//   as undici itself.
// Streamed and form-data bodies take the traced path, converted for undici as platform-node's
// client converts them, so their responses are decoded, limited and counted as any other.
// Upgrades go to platform-node's undici client on the same dispatcher; it neither asks for
// nor decodes compressed bodies and knows no maxBodySize. They are metered up to their
// response head.
import * as PlatformHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Undici from "@effect/platform-node/Undici"
import * as Http from "@volley/core/Http"
import * as HttpBody from "@volley/core/HttpBody"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Headers from "effect/http/Headers"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Url from "effect/http/Url"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Result from "effect/Result"
import * as Tracer from "effect/Tracer"
import {
  Exchange,
  ExchangeKey,
  type ExchangeRead,
  Head,
  type InFlight,
  isPlain,
  retypeRejected,
  type Settings,
  StartKey,
  send,
  start as startRequest,
  TraceHeaders,
  type Upload,
  unsupportedUrl
} from "./dispatch.ts"
import { Meters, type OriginMeter } from "./metrics.ts"
import { clientSpan, endInterrupted, errorType, PROXY_AUTHORIZATION } from "./span.ts"
import { canonical, fromUrl, Target } from "./target.ts"

/**
 * Extra attributes for a traced request's client span, from its URL (`NodeProxy` adds the
 * route). A per-request reference, because the span only exists inside the client.
 */
export const SpanAttributes = Context.Reference<((url: URL) => Record<string, unknown>) | undefined>(
  "@volley/node/internal/http/SpanAttributes",
  { defaultValue: () => undefined }
)

export const make = (dispatcher: Undici.Dispatcher, settings: Settings) =>
  Effect.gen(function* () {
    // Metrics go to the registry of the context the client is built in, as the pool's do.
    const meters = new Meters(yield* Effect.context<never>())
    // A publication still scheduled (requests stalled) goes out now, and no timer outlives the client.
    yield* Effect.addFinalizer(() => Effect.sync(() => meters.close()))
    const fallback = yield* PlatformHttpClient.makeUndici.pipe(
      Effect.provideService(PlatformHttpClient.Dispatcher, dispatcher.compose(withTimeouts(settings)))
    )
    const traced = HttpClient.make((sent, url, signal, fiber) => {
      // The trace headers `HttpClient.make` just added for this request's span go on the wire,
      // not on the response's request (see `TraceHeaders`).
      const trace = injected(sent, fiber)
      const request =
        trace === undefined
          ? sent
          : HttpClientRequest.removeHeader(HttpClientRequest.removeHeader(sent, "b3"), "traceparent")
      const target = fromUrl(url)
      // Only when the request has its client span: otherwise (a streamed body with tracing off
      // for it) the current span is the caller's, which what follows is not about.
      const spanned = hasClientSpan(request, fiber)
      const head = spanned ? new Head() : undefined
      const run =
        target === undefined
          ? Effect.fail(unsupportedUrl(request, url))
          : isPlain(request)
            ? send(
                dispatcher,
                request,
                target,
                settings,
                signal,
                fiber.getRef(HttpBody.Decompress) ?? settings.decompress,
                meters,
                trace,
                head
              )
            : request.headers.upgrade === undefined
              ? Effect.flatMap(uploadOf(request), ([converted, upload]) =>
                  send(
                    dispatcher,
                    converted,
                    target,
                    settings,
                    signal,
                    fiber.getRef(HttpBody.Decompress) ?? settings.decompress,
                    meters,
                    trace,
                    head,
                    upload
                  ).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : release(upload))))
                )
              : // the outer client already traces this request
                metered(
                  meters.of(target.origin),
                  fallback
                    .execute(sent)
                    .pipe(Effect.provideService(Tracer.DisablePropagation, true), Effect.mapError(retypeRejected))
                )
      if (!spanned) return run
      const attributes = fiber.getRef(SpanAttributes)
      const annotated =
        attributes === undefined ? run : Effect.andThen(Effect.annotateCurrentSpan(attributes(url)), run)
      // OpenTelemetry's HTTP conventions want `error.type` on a failed client span; Effect's
      // client sets it for a 4xx/5xx response only, not for a request that got none, and leaves
      // the status of one interrupted unset (see `endInterrupted`).
      return Effect.tapError(annotated, (error) => Effect.annotateCurrentSpan("error.type", errorType(error))).pipe(
        Effect.onInterrupt(() => Effect.withFiber((running) => endCurrentInterrupted(running, head)))
      )
    })
    // `HttpClient.make` fails a URL that does not parse with its own `InvalidUrlError`, and
    // redacts its span's headers by the fiber's names alone (see `PROXY_AUTHORIZATION`).
    const tracedExecute = (request: HttpClientRequest.HttpClientRequest) => {
      const executed = Effect.mapError(traced.execute(request), redactInvalidUrl)
      return request.headers[PROXY_AUTHORIZATION] === undefined ? executed : redactingProxyAuthorization(executed)
    }
    // The last context's (see `FastRefs`): kept until a request in another context replaces it.
    let lastRefs: FastRefs | undefined
    const refsOf = (fiber: Fiber.Fiber<unknown, unknown>): FastRefs => {
      if (lastRefs?.context.deref() !== fiber.context) lastRefs = new FastRefs(fiber.context, settings)
      return lastRefs
    }
    // `A` is the response's type unless an exchange is given (see `send`).
    const fast = <A = HttpClientResponse.HttpClientResponse, E = never, R = never>(
      request: HttpClientRequest.HttpClientRequest,
      fiberRefs: FastRefs,
      trace: TraceHeaders | undefined,
      exchange?: Exchange<A, E, R>
    ): Effect.Effect<A, E | HttpClientError.HttpClientError, R> => {
      const target = targetOf(request)
      return !(target instanceof Target)
        ? Effect.fail(target)
        : send(
            dispatcher,
            request,
            target,
            settings,
            undefined,
            fiberRefs.decompress,
            meters,
            trace,
            undefined,
            undefined,
            exchange
          )
    }
    const route = (request: HttpClientRequest.HttpClientRequest, fiber: Fiber.Fiber<unknown, unknown>) => {
      const fiberRefs = refsOf(fiber)
      const trace = fastTrace(request, fiber, fiberRefs)
      return trace === TRACED ? tracedExecute(request) : fast(request, fiberRefs, trace)
    }
    // A plain request that `@volley/core` reads itself, in a client span made as Effect's client
    // makes it (see span.ts): its body is never left unread, which the rest of `traced` is for.
    const spanned = (request: HttpClientRequest.HttpClientRequest, fiber: Fiber.Fiber<unknown, unknown>) => {
      const made = Url.make(request.url, request.urlParams, Option.getOrUndefined(request.hash))
      if (Result.isFailure(made)) return Effect.fail(invalidUrl(request, made.failure))
      const url = made.success
      const target = fromUrl(url)
      return clientSpan(request, url, fiber, fiber.getRef(SpanAttributes), (trace, head) =>
        target === undefined
          ? Effect.fail(unsupportedUrl(request, url))
          : send(dispatcher, request, target, settings, undefined, refsOf(fiber).decompress, meters, trace, head)
      )
    }
    // `@volley/core`'s exchange (`Http.*`, a batch's first attempt) in fewer steps on the fast
    // path (see `Exchange`).
    const exchange = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      kind: ExchangeRead,
      handle: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
      read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
      fiber: Fiber.Fiber<unknown, unknown> | undefined,
      inFlight: InFlight | undefined
    ): Effect.Effect<A, E | HttpClientError.HttpClientError, R> => {
      // Without the fiber that will run it (a batch's attempt), the route is decided when it runs.
      if (fiber === undefined)
        return Effect.withFiber((fiber) => exchange(request, kind, handle, read, fiber, inFlight))
      const fiberRefs = refsOf(fiber)
      const trace = fastTrace(request, fiber, fiberRefs)
      if (trace === TRACED)
        return Effect.flatMap(isPlain(request) ? spanned(request, fiber) : tracedExecute(request), handle)
      return fast(request, fiberRefs, trace, new Exchange(kind, handle, read, fiberRefs.maxBodySize, inFlight))
    }
    // The same, started without an effect for a batch worker (see `@volley/core`'s `StartKey`):
    // only a request the fast path sends as it is.
    const start = <A, E, R>(
      request: HttpClientRequest.HttpClientRequest,
      kind: ExchangeRead,
      handle: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
      read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
      fiber: Fiber.Fiber<unknown, unknown>,
      inFlight: InFlight,
      resume: (effect: Effect.Effect<A, E | HttpClientError.HttpClientError, R>) => void
    ): boolean => {
      const fiberRefs = refsOf(fiber)
      const trace = fastTrace(request, fiber, fiberRefs)
      if (trace === TRACED) return false
      const target = targetOf(request)
      if (!(target instanceof Target)) return false
      const exchange = new Exchange(kind, handle, read, fiberRefs.maxBodySize, inFlight)
      startRequest(dispatcher, request, target, settings, fiberRefs.decompress, meters, trace, exchange, resume)
      return true
    }
    const client = HttpClient.makeWith(
      (effect) => Effect.flatMap(effect, (request) => Effect.withFiber((fiber) => route(request, fiber))),
      Effect.succeed as HttpClient.HttpClient.Preprocess<never, never>
    )
    // `execute` is `postprocess(preprocess(request))`; with nothing to preprocess that is one
    // step on the fiber, not a succeed and a flatMap before it (`Http.*` and batches call it per
    // request). Clients derived from this one go through `postprocess`, as before.
    return Object.assign(client, {
      execute: (request: HttpClientRequest.HttpClientRequest) => Effect.withFiber((fiber) => route(request, fiber)),
      [ExchangeKey]: exchange,
      [StartKey]: start
    })
  })

// What the fast path reads of a fiber's context, read again only when the context changes: a
// context never changes (providing a service makes a new one), the fibers of `Effect.forEach`
// and of a batch share theirs, and looking up a reference the context does not set costs two
// map misses (six of them were a twentieth of a small request's own JavaScript). One context
// is remembered, not a map of them: a `WeakMap` insert per context cost several times the
// lookups it saves where each request has a context of its own (a span per request). Held
// weakly, as is the one function read from it: kept for good, the last context (and what its
// services and that function reach: a finished batch's results, say) lived on until a request in
// another context came, perhaps never.
class FastRefs {
  readonly context: WeakRef<Context.Context<never>>
  // Whether trace context may be sent at all.
  readonly propagating: boolean
  // Alive while the context is, which holds it: so whenever these references are used.
  readonly disabledWhen: WeakRef<(request: HttpClientRequest.HttpClientRequest) => boolean>
  // Whether spans are recorded (a tracer other than Effect's default one).
  readonly recording: boolean
  readonly propagationEnabled: boolean
  readonly maxBodySize: number
  readonly decompress: boolean
  constructor(context: Context.Context<never>, settings: Settings) {
    this.context = new WeakRef(context)
    this.propagating =
      !Context.get(context, Tracer.DisablePropagation) && Context.get(context, References.TracerEnabled)
    this.disabledWhen = new WeakRef(Context.get(context, HttpClient.TracerDisabledWhen))
    this.recording = Context.get(context, Tracer.Tracer) !== Tracer.nativeTracer
    this.propagationEnabled = Context.get(context, HttpClient.TracerPropagationEnabled)
    this.maxBodySize = Context.get(context, HttpBody.MaxBodySize) ?? settings.maxBodySize
    this.decompress = Context.get(context, HttpBody.Decompress) ?? settings.decompress
  }
}

// Whether a plain request takes the fast path, and then with which trace headers; `TRACED`: it
// needs `HttpClient.make`'s client span (or is not plain).
const TRACED = Symbol("traced")
const fastTrace = (
  request: HttpClientRequest.HttpClientRequest,
  fiber: Fiber.Fiber<unknown, unknown>,
  refs: FastRefs
): TraceHeaders | undefined | typeof TRACED => {
  if (!isPlain(request)) return TRACED
  if (!refs.propagating) return undefined
  // No client span for this request (`TracerDisabledWhen`, as a batch without `tracing` sets
  // it), or nothing records spans (Effect's default tracer): skip the span, but keep
  // propagating the enclosing span's trace context (a batch's), so the trace stays one. The
  // predicate is the user's: called for every request, as Effect's client calls it, and with
  // no `this`.
  const disabledWhen = refs.disabledWhen.deref()!
  if (disabledWhen(request) || !refs.recording) return traceOf(fiber, refs)
  return TRACED
}

// The `b3` and `traceparent` `HttpClient.make` set on `request` for its client span (over any
// the caller set), or `undefined` when it set none (no span, or propagation off).
const injected = (
  request: HttpClientRequest.HttpClientRequest,
  fiber: Fiber.Fiber<unknown, unknown>
): TraceHeaders | undefined => {
  const { b3, traceparent } = request.headers
  if (b3 === undefined || traceparent === undefined) return undefined
  return hasClientSpan(request, fiber) && fiber.getRef(HttpClient.TracerPropagationEnabled)
    ? new TraceHeaders(b3, traceparent)
    : undefined
}

// Ends the client span `HttpClient.make` runs the request in (the fiber's current span) as
// `clientSpan` ends its own when interrupted.
const endCurrentInterrupted = (fiber: Fiber.Fiber<unknown, unknown>, head: Head | undefined): Effect.Effect<void> => {
  const span = fiber.cache.span
  if (span?._tag === "Span") endInterrupted(fiber, span, head)
  return Effect.void
}

// Whether `HttpClient.make` runs this request in a client span of its own, as it decides.
const hasClientSpan = (request: HttpClientRequest.HttpClientRequest, fiber: Fiber.Fiber<unknown, unknown>): boolean =>
  fiber.getRef(References.TracerEnabled) &&
  !fiber.getRef(Tracer.DisablePropagation) &&
  !fiber.getRef(HttpClient.TracerDisabledWhen)(request)

// Where the request's URL, as `Url.make` resolves it, goes, or why it cannot be sent. Without
// query parameters or hash (most requests) it is the URL as given: read from its text when
// written as the parser writes it, else `URL.parse` alone, with no exception to catch.
const targetOf = (request: HttpClientRequest.HttpClientRequest): Target | HttpClientError.HttpClientError => {
  let url: URL | null = null
  if (request.urlParams.params.length === 0 && Option.isNone(request.hash)) {
    const target = canonical(request.url)
    if (target !== undefined) return target
    url = URL.parse(request.url)
  }
  if (url === null) {
    const made = Url.make(request.url, request.urlParams, Option.getOrUndefined(request.hash))
    if (Result.isFailure(made)) return invalidUrl(request, made.failure)
    url = made.success
  }
  return fromUrl(url) ?? unsupportedUrl(request, url)
}

// The description says what to fix: the parser's own error says only "Invalid URL", and a path
// without its origin (`/todos/1`, a base never prepended) or a host without its scheme are the
// usual causes.
const invalidUrl = (request: HttpClientRequest.HttpClientRequest, cause: unknown): HttpClientError.HttpClientError =>
  redactInvalidUrl(
    new HttpClientError.HttpClientError({
      reason: new HttpClientError.InvalidUrlError({ request, cause, description: UNPARSED_URL })
    })
  )

const UNPARSED_URL = "the URL does not parse (an absolute http:// or https:// URL is needed)"

const redactingProxyAuthorization = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => {
    const names = fiber.getRef(Headers.CurrentRedactedNames)
    return Headers.isRedactedName(PROXY_AUTHORIZATION, names)
      ? effect
      : Effect.provideService(effect, Headers.CurrentRedactedNames, [...names, PROXY_AUTHORIZATION])
  })

// A request whose URL does not parse is never sent: its error holds it with the URL as volley
// shows it, since Effect's message, JSON and inspection of the request miss a password holding a
// `/`, `?` or `#` (the parser ends the authority there). Node's URL parser keeps the text it
// refused as its error's `input`, an enumerable field (shown by the error's JSON and inspection),
// redacted the same way; the parser made that error for this request alone, so it is changed in
// place.
const redactInvalidUrl = (error: HttpClientError.HttpClientError): HttpClientError.HttpClientError => {
  const reason = error.reason
  if (reason._tag !== "InvalidUrlError") return error
  const parse = reason.cause instanceof Url.UrlError ? reason.cause.cause : undefined
  if (parse instanceof TypeError && "input" in parse && typeof parse.input === "string") {
    parse.input = Http.redactUrl(parse.input)
  }
  const url = Http.redactUrl(reason.request.url)
  if (url === reason.request.url) return error
  return new HttpClientError.HttpClientError({
    reason: new HttpClientError.InvalidUrlError({
      request: HttpClientRequest.setUrl(reason.request, url),
      cause: reason.cause,
      ...(reason.description === undefined ? {} : { description: reason.description })
    })
  })
}

// With no tracer recording, a request carries the trace context of the span it runs in, if
// any (a server span continued from an incoming `traceparent`, a `withSpan` around the call,
// a batch's span), so a trace that crosses this service stays one trace; without a span it
// carries none. Each span's headers are built once (a batch sends its span's with every request).
const traceHeaders = new WeakMap<Tracer.AnySpan, TraceHeaders | null>()
const traceOf = (fiber: Fiber.Fiber<unknown, unknown>, refs: FastRefs): TraceHeaders | undefined => {
  const span = fiber.cache.span
  if (span === undefined || !refs.propagationEnabled) return undefined
  let trace = traceHeaders.get(span)
  if (trace === undefined) {
    trace =
      span._tag === "Span" && Context.get(span.annotations, Tracer.DisablePropagation) ? null : TraceHeaders.of(span)
    traceHeaders.set(span, trace)
  }
  return trace ?? undefined
}

// A streamed or form-data body as undici takes it, and the request to send it with, encoded as
// platform-node's client encodes them: a Readable pulling the stream in the caller's context;
// the entries copied into undici's FormData (undici refuses another FormData), with any
// Content-Type dropped so that undici's, which names the multipart boundary, is sent.
const uploadOf = (
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<readonly [HttpClientRequest.HttpClientRequest, Upload]> => {
  const body = request.body
  if (body._tag === "Stream") return Effect.map(NodeStream.toReadable(body.stream), (readable) => [request, readable])
  const form = new Undici.FormData()
  if (body._tag === "FormData") for (const [key, value] of body.formData) form.append(key, value)
  return Effect.succeed([
    request.headers["content-type"] === undefined ? request : HttpClientRequest.removeHeader(request, "content-type"),
    form
  ])
}

// A request that failed before its response head may not have read its stream body (refused
// at once, interrupted while queued): undici leaves the Readable as it is, so it is destroyed
// here, which interrupts the stream's fiber and releases what the stream holds.
const release = (upload: Upload): Effect.Effect<void> =>
  upload instanceof Undici.FormData ? Effect.void : Effect.sync(() => upload.destroy())

// An upgrade request in the client's metrics, from sending to its response head (a 101's
// connection is the caller's socket from then on; a refusal's body is not measured).
const metered = (
  meter: OriginMeter,
  upgrade: Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>
): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> =>
  // Uninterruptible until `onExit` is in place: an interrupt between the two (at a yield of the
  // fiber) would leave the request counted in flight for good.
  Effect.uninterruptibleMask((restore) => {
    const started = meter.start()
    return Effect.onExit(restore(upgrade), (exit) =>
      Effect.sync(() => meter.end(started, Exit.isSuccess(exit) ? exit.value.status : 0, 0))
    )
  })

// platform-node sets headersTimeout/bodyTimeout on every request (to leave them to
// Effect.timeout); an interceptor is the one place left where ours take effect.
const withTimeouts =
  (settings: Settings): Undici.Dispatcher.DispatcherComposeInterceptor =>
  (dispatch) =>
  (opts, handler) =>
    dispatch({ ...opts, headersTimeout: settings.headersTimeoutMs, bodyTimeout: settings.bodyTimeoutMs }, handler)
