// One request on undici's `dispatch` with a handler object of our own: no promise, no
// Readable body, no per-request closures beyond the `Effect.callback` itself.
import { AsyncResource } from "node:async_hooks"
import type { Readable } from "node:stream"
import * as Undici from "@effect/platform-node/Undici"
import * as Effect from "effect/Effect"
import * as Headers from "effect/http/Headers"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import { ACCEPT_ENCODING, codingsOf, MAX_CODINGS, tooManyCodings } from "./decode.ts"
import { describedBy } from "./describe.ts"
import type { Meters, OriginMeter } from "./metrics.ts"
import { QUEUED_ABORT } from "./queued.ts"
import { refusal } from "./refusal.ts"
import { Body, HIGH_WATER_MARK, isComplete, LeanResponse, readComplete, track } from "./response.ts"
import type { Target } from "./target.ts"

/** The client's settings for every request: timeouts in milliseconds, as undici takes them, and body defaults. */
export interface Settings {
  readonly headersTimeoutMs: number
  readonly bodyTimeoutMs: number
  /** Whether to ask for and decode compressed bodies unless a request's `HttpBody.Decompress` says otherwise. */
  readonly decompress: boolean
  /** Body limit unless a read's `HttpBody.MaxBodySize` says otherwise; `Infinity`: none. */
  readonly maxBodySize: number
  /** Whether HTTP/2 may be negotiated with `https:` origins. */
  readonly http2: boolean
}

/**
 * Whether undici can send this request's body as it is (a streamed or form-data body is
 * converted first, see {@link Upload}; an upgrade goes to platform-node's client).
 */
export const isPlain = (request: HttpClientRequest.HttpClientRequest): boolean => {
  const tag = request.body._tag
  return (tag === "Empty" || tag === "Uint8Array" || tag === "Raw") && request.headers.upgrade === undefined
}

/**
 * A streamed or form-data request body converted for undici: a Readable that pulls the stream,
 * or undici's own FormData (which undici writes as multipart, boundary in the Content-Type).
 */
export type Upload = Readable | Undici.FormData

/**
 * Sends a plain request (see {@link isPlain}), or one whose body is given as `upload`, to
 * `target` (the caller has checked it is `http:`/`https:`). One that can never be sent fails at
 * once without reaching the network: a header undici cannot write (a bad name; CR, LF,
 * NUL or a character above U+00FF in a value) with an `EncodeError`. Interrupting the effect
 * before the response head arrives aborts the request, which destroys its socket. `signal`,
 * when given, aborts it at any time, including while the body is read (`HttpClient.make` uses
 * it for scoped requests and for responses that are dropped unread). `head`, when given, gets
 * the response head as it arrives (see {@link Head}). With `exchange`, the effect is that
 * exchange's result instead of the response (see {@link Exchange}).
 */
export const send = <A = HttpClientResponse.HttpClientResponse, E = never, R = never>(
  dispatcher: Undici.Dispatcher,
  request: HttpClientRequest.HttpClientRequest,
  target: Target,
  settings: Settings,
  signal: AbortSignal | undefined,
  decompress: boolean,
  meters: Meters,
  trace: TraceHeaders | undefined,
  head?: Head,
  upload?: Upload,
  exchange?: Exchange<A, E, R>
): Effect.Effect<A, E | HttpClientError.HttpClientError, R> => {
  const sent = settings.http2 && target.https ? withoutH2Forbidden(request) : request
  const meter = meters.of(target.origin)
  // Without an exchange, what the handler resumes with is the response (`A`'s default).
  return Effect.callback((resume) => {
    const handler = new Handler(
      sent,
      target.href,
      resume as Resume,
      signal,
      decompress,
      settings,
      meter,
      head,
      exchange
    )
    write(dispatcher, sent, target, settings, decompress, trace, upload, handler)
    const inFlight = exchange?.inFlight
    if (inFlight === undefined) return Effect.sync(() => handler.abort(new Error("The request was interrupted")))
    inFlight.current = handler
  }) as Effect.Effect<A, E | HttpClientError.HttpClientError, R>
}

/**
 * Sends a plain request for `exchange` as {@link send} does, without an effect: `resume` is
 * called once with what the caller's fiber would resume with (an `Exit` for a built-in read of
 * a complete 2xx body, else an effect to run), possibly before this returns (a request undici
 * refuses at once). The request is left in `exchange.inFlight` to be aborted. For a caller that
 * sends one request after another from the same suspension of its fiber (a batch worker).
 */
export const start = <A, E, R>(
  dispatcher: Undici.Dispatcher,
  request: HttpClientRequest.HttpClientRequest,
  target: Target,
  settings: Settings,
  decompress: boolean,
  meters: Meters,
  trace: TraceHeaders | undefined,
  exchange: Exchange<A, E, R>,
  resume: (effect: Effect.Effect<A, E | HttpClientError.HttpClientError, R>) => void
): void => {
  const sent = settings.http2 && target.https ? withoutH2Forbidden(request) : request
  const handler = new Handler(
    sent,
    target.href,
    resume as Resume,
    undefined,
    decompress,
    settings,
    meters.of(target.origin),
    undefined,
    exchange
  )
  const inFlight = exchange.inFlight
  if (inFlight !== undefined) {
    inFlight.context ??= new WorkerContext()
    handler.context = inFlight.context
    // Set before undici may call back: a refusal resumes at once, and the caller starts its next request.
    inFlight.current = handler
  }
  write(dispatcher, sent, target, settings, decompress, trace, undefined, handler)
}

/** What `@volley/core`'s exchange reads from a 2xx response (see `ExchangeKey`), as it names it. */
export type ExchangeRead = "text" | "bytes" | "custom"

/**
 * Where `@volley/core`'s batch worker keeps its request in flight, to abort it when the worker
 * is interrupted (its `Exchange.InFlight`): such a request returns no interrupt handler.
 */
export interface InFlight {
  current: { readonly abort: (reason: Error) => void } | undefined
  /**
   * The async context of the worker's fiber, captured by the first request {@link start} sends
   * for it (from the fiber): the worker's later requests are sent from the previous one's
   * response, outside the fiber, and their callbacks run in this context, as the fiber's would
   * (an `AsyncLocalStorage` store, OpenTelemetry's context, undici's diagnostics channels).
   */
  context: WorkerContext | undefined
}

/** A worker's async context (see `InFlight.context`), ended (for async_hooks) when the worker ends. */
class WorkerContext extends AsyncResource {
  constructor() {
    super("volley.Fanout.worker")
  }
  end(): void {
    this.emitDestroy()
  }
}

/**
 * Where `@volley/core` finds a client's exchange (see its internal/http/exchange.ts): a registry
 * symbol, so neither package imports the other's internals.
 */
export const ExchangeKey: unique symbol = Symbol.for("@volley/core/HttpClient/exchange") as never

/** Where `@volley/core`'s batch worker finds a client's {@link start} (see its `StartKey`). */
export const StartKey: unique symbol = Symbol.for("@volley/core/HttpClient/start") as never

/**
 * A request sent for `@volley/core`'s exchange: the caller resumes with `handle` run on the
 * response (which checks its status, follows a redirect, reads the body), one step fewer than
 * resuming with the response for the caller to run `handle`. A 2xx response whose body is
 * complete goes to `read` directly: `handle` would also make sure a failed read leaves no body
 * holding its connection, and a complete body holds none. With a built-in read within `limit`,
 * the caller resumes with the read's result at once.
 */
export class Exchange<A, E, R> {
  readonly kind: ExchangeRead
  readonly handle: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  readonly read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  readonly limit: number
  readonly inFlight: InFlight | undefined
  constructor(
    kind: ExchangeRead,
    handle: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
    read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>,
    limit: number,
    inFlight: InFlight | undefined
  ) {
    this.kind = kind
    this.handle = handle
    this.read = read
    this.limit = limit
    this.inFlight = inFlight
  }

  /** What the caller resumes with for a response whose body may still be arriving: `handle`'s effect. */
  early(response: LeanResponse): Effect.Effect<A, E, R> {
    try {
      return this.handle(response)
    } catch (defect) {
      return thrown(response, defect)
    }
  }

  /** What the caller resumes with for a response whose body has ended, or failed. */
  settle(response: LeanResponse): Effect.Effect<A, E, R> {
    try {
      const status = response.status
      if (status < 200 || status >= 300 || !isComplete(response.body)) return this.handle(response)
      const kind = this.kind
      const value = kind === "custom" ? undefined : readComplete(response.body, kind, this.limit)
      // The result of a built-in read is its `A` (a string or bytes).
      return value === undefined ? this.read(response) : Effect.succeed(value as A)
    } catch (defect) {
      return thrown(response, defect)
    }
  }
}

// A caller's `read` that throws instead of failing, called here in undici's callbacks rather
// than on the caller's fiber: the fiber dies with the throw, as it would had the function run
// there (in a `flatMap`), instead of the process; a body still arriving is aborted, as after a
// failed read, rather than left holding its connection.
const thrown = (response: LeanResponse, defect: unknown): Effect.Effect<never> => {
  if (!response.body.ended) response.body.abort(new Error("The response's read threw"))
  return Effect.die(defect)
}

/**
 * Trace context request headers (`b3`, `traceparent`), sent on top of a request's own headers
 * and kept off the request object, so that a response's `request` is the caller's (a redirect
 * hop starts from it, see Redirects). A request without a client span of its own sends its
 * span's, built once per span: every request of a batch sends its batch span's, and copying
 * them into each request (a new `Headers` and request per request) cost a tenth of a small
 * request's CPU.
 */
export class TraceHeaders {
  readonly headers: Readonly<Record<string, string>>
  // With the Accept-Encoding of a request that asks for compressed bodies.
  readonly accepting: Readonly<Record<string, string>>
  constructor(b3: string, traceparent: string) {
    this.headers = Object.freeze({ b3, traceparent })
    this.accepting = Object.freeze({ ...this.headers, "accept-encoding": ACCEPT_ENCODING })
  }

  /** A span's, as Effect's client would send them. */
  static of(span: { readonly traceId: string; readonly spanId: string; readonly sampled: boolean }): TraceHeaders {
    return new TraceHeaders(
      `${span.traceId}-${span.spanId}-${span.sampled ? "1" : "0"}`,
      `00-${span.traceId.padStart(32, "0")}-${span.spanId}-${span.sampled ? "01" : "00"}`
    )
  }
}

// Request headers HTTP/2 forbids (RFC 9113 §8.2.2, RFC 7540 §3.2.1) that undici passes on:
// node:http2 throws on them, and undici then destroys the whole connection, failing every request
// on it (it refuses the others, `Connection`, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`,
// itself). Dropped when the connection may speak HTTP/2, as curl does; meaningless on HTTP/1.1
// anyway. A `TE` of `trailers` in another case or with spaces is sent as node:http2 wants it.
const withoutH2Forbidden = (request: HttpClientRequest.HttpClientRequest): HttpClientRequest.HttpClientRequest => {
  const te = request.headers.te
  const h2Settings = request.headers["http2-settings"] !== undefined
  const proxyConnection = request.headers["proxy-connection"] !== undefined
  if ((te === undefined || te === "trailers") && !h2Settings && !proxyConnection) return request
  let sent = request
  if (te !== undefined && te !== "trailers") {
    sent =
      te.trim().toLowerCase() === "trailers"
        ? HttpClientRequest.setHeader(sent, "te", "trailers")
        : HttpClientRequest.removeHeader(sent, "te")
  }
  if (h2Settings) sent = HttpClientRequest.removeHeader(sent, "http2-settings")
  return proxyConnection ? HttpClientRequest.removeHeader(sent, "proxy-connection") : sent
}

/**
 * Where a traced request's client span finds its response head as soon as it arrives, before
 * the response is handed over (a 2xx with a small announced body waits for the body, see
 * `Handler.pending`): a request cut short while it waits still shows the status it got.
 */
export class Head {
  response: HttpClientResponse.HttpClientResponse | undefined = undefined
}

/** The error of a request whose URL is not `http:`/`https:`: it can never be sent. */
export const unsupportedUrl = (request: HttpClientRequest.HttpClientRequest, url: URL) =>
  new HttpClientError.HttpClientError({
    reason: new HttpClientError.InvalidUrlError({
      request,
      // `localhost:8080/x` parses with the scheme `localhost:` and no host: its scheme was left out.
      description: `only http: and https: URLs can be sent, got ${url.protocol}${url.host === "" ? "; is http:// missing?" : ""}`
    })
  })

/**
 * A `TransportError` that only wraps undici's rejection of the request's input (a header it
 * cannot write), as the `EncodeError` it is; other errors as they are. For clients that wrap
 * undici's errors without this distinction (platform-node's, which serves upgrades).
 */
export const retypeRejected = (error: HttpClientError.HttpClientError): HttpClientError.HttpClientError => {
  const reason = error.reason
  if (reason._tag !== "TransportError" || !isInvalidArgument(reason.cause)) return error
  return new HttpClientError.HttpClientError({
    reason: new HttpClientError.EncodeError({
      request: reason.request,
      cause: reason.cause,
      description: reason.cause.message
    })
  })
}

type Resume = (effect: Effect.Effect<unknown, unknown, unknown>) => void

// Where undici looks for the hook that hands a queued request's cancel function to its handler
// (see ./queued.ts); an undici without one gets the hook under a key it never reads.
const QUEUED: symbol = QUEUED_ABORT ?? Symbol("volley/unread")

const write = (
  dispatcher: Undici.Dispatcher,
  request: HttpClientRequest.HttpClientRequest,
  target: Target,
  settings: Settings,
  decompress: boolean,
  trace: TraceHeaders | undefined,
  upload: Upload | undefined,
  handler: Handler
): void => {
  const refused = refusal(request.method, request.headers)
  if (refused !== undefined) {
    handler.onResponseError(undefined, refused)
    return
  }
  try {
    dispatcher.dispatch(
      {
        origin: target.origin,
        path: target.path,
        method: request.method,
        headers: outgoing(request.headers, decompress, trace),
        body: upload ?? (request.body._tag === "Empty" ? null : (request.body as { readonly body: Uint8Array }).body),
        headersTimeout: settings.headersTimeoutMs,
        bodyTimeout: settings.bodyTimeoutMs,
        [QUEUED]: handler.queued
      },
      handler
    )
  } catch (cause) {
    handler.onResponseError(undefined, cause)
  }
}

class Handler implements Undici.Dispatcher.DispatchHandler {
  readonly request: HttpClientRequest.HttpClientRequest
  // What the response reports as its URL.
  readonly url: string
  readonly resume: Resume
  readonly signal: AbortSignal | undefined
  readonly decompress: boolean
  readonly settings: Settings
  readonly meter: OriginMeter
  readonly head: Head | undefined
  readonly exchange: Exchange<unknown, unknown, unknown> | undefined
  readonly started: number
  // When undici wrote the request (performance.now()), for informational responses only.
  sentAt = 0
  status = 0
  wireBytes = 0
  controller: Undici.Dispatcher.DispatchController | undefined = undefined
  body: Body | undefined = undefined
  // Set while a small body is being buffered before the response is handed over.
  pending: LeanResponse | undefined = undefined
  reason: Error | undefined = undefined
  done = false
  // Where `resume` runs, when not in undici's context (see `InFlight.context`).
  context: WorkerContext | undefined = undefined
  // Takes the request out of undici's queue while it waits for a connection (see ./queued.ts).
  cancelQueued: ((reason: Error) => void) | undefined = undefined
  readonly queued = (cancel: (reason: Error) => void): void => {
    this.cancelQueued = cancel
  }

  constructor(
    request: HttpClientRequest.HttpClientRequest,
    url: string,
    resume: Resume,
    signal: AbortSignal | undefined,
    decompress: boolean,
    settings: Settings,
    meter: OriginMeter,
    head: Head | undefined,
    exchange: Exchange<unknown, unknown, unknown> | undefined
  ) {
    this.request = request
    this.url = url
    this.resume = resume
    this.signal = signal
    this.decompress = decompress
    this.settings = settings
    this.meter = meter
    this.head = head
    this.exchange = exchange
    this.started = meter.start()
    if (signal !== undefined) {
      if (signal.aborted) this.reason = signal.reason
      else signal.addEventListener("abort", this)
    }
  }

  // EventListener for `signal`: the handler object itself, so no closure per request.
  handleEvent(): void {
    this.abort(this.signal?.reason ?? new Error("The request was aborted"))
  }

  abort(reason: Error): void {
    if (this.done) return
    this.reason ??= reason
    if (this.controller !== undefined) {
      this.controller.abort(reason)
      return
    }
    // Not started (waiting for a connection, or for a proxy's tunnel): it is over for the metrics
    // now. undici takes it out of its queue and gives up a connection being opened that no other
    // request waits for, closing its socket (not a proxy's tunnel: undici's connector for it does
    // not hand the socket back); from a microtask, as undici calls back `onResponseError` at once
    // and this runs in an interrupt. Without the hook, undici drops the request when its turn
    // comes (see `onRequestStart`), which may be long after.
    this.finish()
    const cancel = this.cancelQueued
    if (cancel !== undefined) {
      this.cancelQueued = undefined
      queueMicrotask(() => cancel(reason))
    }
  }

  finish(): void {
    if (this.done) return
    this.done = true
    this.signal?.removeEventListener("abort", this)
    this.meter.end(this.started, this.status, this.wireBytes)
  }

  onRequestStart(controller: Undici.Dispatcher.DispatchController): void {
    this.controller = controller
    this.cancelQueued = undefined
    // Interrupted or aborted while queued for a connection: throwing makes undici drop the
    // request unwritten and keep the connection for the next one (`controller.abort` here
    // would destroy it, and N cancelled queued requests would cost N new connections).
    if (this.reason !== undefined) throw this.reason
    this.sentAt = performance.now()
  }

  onResponseStart(
    controller: Undici.Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | Array<string> | undefined>
  ): void {
    if (statusCode < 200) {
      // undici starts its headers timer again at each informational response (103 Early Hints,
      // 102 Processing): an origin sending them on and on would hold the final head back for
      // good. headersTimeout bounds the whole wait, as documented.
      const limit = this.settings.headersTimeoutMs
      if (limit > 0 && performance.now() - this.sentAt >= limit)
        controller.abort(new Undici.errors.HeadersTimeoutError())
      return
    }
    this.status = statusCode
    const codings = this.decompress ? codingsOf(headers["content-encoding"]) : undefined
    this.body = new Body(controller, codings, this.settings.maxBodySize)
    const response = new LeanResponse(this.request, this.url, statusCode, headers, this.body)
    // A 2xx body announced as small is awaited before handing the response over: reading it
    // then costs no second suspension of the caller's fiber, and the connection is free again by
    // the time the caller sees the response (so an unread small body never holds it). Not an
    // encoded one: a small wire body can decode to any size. Nor another status's: the caller
    // bounds how long it drains that body (a 503 whose body stalls held the request for the
    // whole bodyTimeout, its status known), and it comes at once when it is in the same read.
    this.pending = response
    if (this.head !== undefined) this.head.response = response
    // Refused before any of it is decoded; the caller's read fails with the DecodeError.
    if (codings !== undefined && codings.length > MAX_CODINGS) this.body.abort(tooManyCodings(codings))
    const length = headers["content-length"]
    if (statusCode < 300 && codings === undefined && typeof length === "string" && Number(length) <= HIGH_WATER_MARK)
      return
    // Otherwise (chunked or large): hand it over once undici has parsed what the socket has
    // delivered so far, so a small chunked body that came in the same read goes with its end.
    queueMicrotask(() => this.handOverEarly())
  }

  handOverEarly(): void {
    const response = this.pending
    // Ended in the read that brought its head: `end` hands it over, once undici has freed the
    // connection. Handed over now, its body would not have ended yet (`end` ends it): a caller
    // that dropped it (an error body of unannounced length) would abort it, and send its next
    // request before the connection is back in the pool, on a new one.
    if (response === undefined || this.done) return
    this.pending = undefined
    track(response)
    this.deliver(this.exchange === undefined ? Effect.succeed(response) : this.exchange.early(response))
  }

  onResponseData(_controller: Undici.Dispatcher.DispatchController, chunk: Buffer): void {
    this.wireBytes += chunk.byteLength
    this.body?.push(chunk)
  }

  onResponseEnd(): void {
    this.finish()
    // undici frees a keep-alive connection for its pool only on the next event-loop turn
    // (a `setImmediate` it schedules after this callback returns). A caller resumed before
    // then (by the response or by the end of the body it awaits) would send its next request
    // on a new connection, and C callers would hold up to 2C. Ending from an immediate queued
    // after undici's lets the next request reuse this connection.
    if (ending.push(this) === 1) RESOLVED.then(queueEnds)
  }

  end(): void {
    this.body?.end()
    this.handOver()
  }

  onResponseError(_controller: Undici.Dispatcher.DispatchController | undefined, cause: unknown): void {
    this.finish()
    if (this.body !== undefined) {
      // The head arrived, so this is a body failure: the caller sees it when reading.
      this.body.fail(cause)
      this.handOver()
      return
    }
    // Built when the caller's fiber resumes, not in undici's callback: the error redacts its
    // URL with that fiber's `UrlParams.CurrentRedactedNames` (with none current, Effect's defaults).
    this.deliver(
      Effect.failSync(
        () =>
          new HttpClientError.HttpClientError({
            reason:
              // Rejected by undici before it started (a header name or value it cannot write):
              // the request can never be sent, so it is input to fix, not a transport failure
              // to retry.
              this.controller === undefined && isInvalidArgument(cause)
                ? new HttpClientError.EncodeError({ request: this.request, cause, description: cause.message })
                : new HttpClientError.TransportError({ request: this.request, cause, ...describedBy(cause) })
          })
      )
    )
  }

  deliver(effect: Effect.Effect<unknown, unknown, unknown>): void {
    const context = this.context
    if (context === undefined) this.resume(effect)
    else context.runInAsyncScope(this.resume, undefined, effect)
  }

  handOver(): void {
    const response = this.pending
    if (response === undefined) return
    this.pending = undefined
    this.deliver(this.exchange === undefined ? Effect.succeed(response) : this.exchange.settle(response))
  }
}

// The headers undici sends: the request's, its span's trace context over them, and an
// Accept-Encoding when asking for compressed bodies (one the caller set is sent as it is; the
// response is still decoded). The headers of most requests are Effect's shared empty Headers:
// they get one shared object rather than a copy each (a copy per request showed in the plain
// path's benchmark).
const ACCEPT_ONLY: Readonly<Record<string, string>> = Object.freeze({ "accept-encoding": ACCEPT_ENCODING })
// The last headers sent with an Accept-Encoding added (and no trace headers), reused while the
// same Headers object comes again: requests made from one template share it (`Http.getJson`'s
// `accept`), and a copy per request showed in the JSON idiom's profile.
let lastAsked: Headers.Headers | undefined
let lastMerged: Readonly<Record<string, string>> = ACCEPT_ONLY
const outgoing = (
  headers: Headers.Headers,
  decompress: boolean,
  trace: TraceHeaders | undefined
): Readonly<Record<string, string>> => {
  if (headers === Headers.empty) {
    if (trace !== undefined) return decompress ? trace.accepting : trace.headers
    return decompress ? ACCEPT_ONLY : headers
  }
  const asking = decompress && headers["accept-encoding"] === undefined
  if (trace === undefined) {
    if (!asking) return headers
    if (headers !== lastAsked) {
      lastMerged = Object.freeze({ ...headers, "accept-encoding": ACCEPT_ENCODING })
      lastAsked = headers
    }
    return lastMerged
  }
  const merged: Record<string, string> = { ...headers, ...trace.headers }
  if (asking) merged["accept-encoding"] = ACCEPT_ENCODING
  return merged
}

// undici's refusals of a request's input, before anything is written: a header it cannot write
// (`InvalidArgumentError`), an `Expect` header (`NotSupportedError`), a Content-Length the body
// contradicts. Sending it again fails the same way.
const UNSENDABLE: ReadonlySet<unknown> = new Set([
  "UND_ERR_INVALID_ARG",
  "UND_ERR_NOT_SUPPORTED",
  "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH"
])

const isInvalidArgument = (cause: unknown): cause is Error =>
  cause instanceof Error && UNSENDABLE.has((cause as { readonly code?: unknown }).code)

// Responses that ended during the current task, ended together from one immediate queued by a
// microtask (which runs once the task is over, so after undici queued its immediates): per
// response, a slot in an array instead of a `process.nextTick` and an immediate of its own,
// which cost 5-6% of the plain path's JavaScript. A task mostly ends one response (a socket read
// carries one): that one goes to the immediate alone, and the array is emptied in place.
let ending: Array<Handler> = []
const RESOLVED = Promise.resolve()
const queueEnds = (): void => {
  // Emptied before scheduling: whatever happens next, the next response schedules its own.
  const handlers = ending
  if (handlers.length === 1) {
    const handler = handlers[0]!
    handlers.length = 0
    setImmediate(end, handler)
    return
  }
  ending = []
  setImmediate(endAll, handlers)
}
const end = (handler: Handler): void => handler.end()
const endAll = (handlers: Array<Handler>): void => {
  for (let i = 0; i < handlers.length; i++) {
    try {
      handlers[i]!.end()
    } catch (error) {
      // Resuming a fiber runs its observers, which may throw (a `runCallback`'s onExit): the
      // others still end, and the error is thrown on as it would have been from its own immediate.
      queueMicrotask(() => {
        throw error
      })
    }
  }
}
