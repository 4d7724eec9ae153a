// One exchange of a request for a read result, as `Http.*` and a batch's first attempt run it:
// execute, follow a redirect (./redirect.ts), treat another non-2xx status as a
// `StatusCodeError`, read the body. No Scope, no
// finalizer, no fiber: a body is never left holding its keep-alive connection because
// - a non-2xx body is read to its end before the error is returned (the connection is reused);
// - a caller's `read` that fails or is interrupted is followed by `release`, which makes the
//   client abort a body still arriving (and close its socket);
// - the built-in reads consume the whole body.
// Clients built with Effect's `HttpClient.make` abort a body whose read is interrupted (its
// response wrapper), as volley's NodeHttpClient does, so `release` reaches both.
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Url from "effect/http/Url"
import { executeApplied } from "../retry/client.ts"
import type { RetryError } from "../retry/errors.ts"
import { redactUrl } from "../url.ts"
import { MaxBodySize } from "./body.ts"
import { follow, isRedirect, type RedirectError } from "./redirect.ts"

export type Read<A, E, R> = (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>

/**
 * Where a response may offer its body as bytes without a copy (volley's NodeHttpClient does:
 * a body that arrived in one chunk is handed out as a view of it). A registry symbol, so the
 * platform packages need not import this module.
 */
export const BytesKey = Symbol.for("@volley/core/HttpClientResponse/bytes")

type WithBytes = { readonly [BytesKey]?: Effect.Effect<Uint8Array, HttpClientError.HttpClientError> }

/**
 * Where a client may run a whole exchange in fewer steps: volley's NodeHttpClient hands the
 * response to `handle` itself, rather than resuming the caller with it for `handle` to run next.
 * A 2xx response whose body has already arrived whole goes to `read` directly (if it fails,
 * nothing is left to release), and with a built-in read ({@link readText}, {@link readBytes})
 * within the read's `MaxBodySize` the caller resumes with the body at once (most small bodies).
 * A registry symbol, so the platform packages need not import this module.
 */
export const ExchangeKey = Symbol.for("@volley/core/HttpClient/exchange")

/** What a `handle` built by {@link onResponse} reads from a 2xx response: a built-in read, or its caller's. */
export type ExchangeRead = "text" | "bytes" | "custom"

/**
 * The request a batch worker has in flight, which the worker aborts when it is interrupted: its
 * first attempts then need no interrupt handler of their own (each cost a finalizer on the
 * fiber's stack and an uninterruptible step when the response arrived).
 */
export interface InFlight {
  current: { readonly abort: (reason: Error) => void } | undefined
  /** The client's own while the worker lives (NodeHttpClient keeps the fiber's async context there), ended with it. */
  context: { readonly end: () => void } | undefined
}

type Exchanging = {
  readonly [ExchangeKey]?: <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    kind: ExchangeRead,
    handle: Read<A, E, R>,
    read: Read<A, E, R>,
    fiber: Fiber.Fiber<unknown, unknown> | undefined,
    inFlight: InFlight | undefined
  ) => Effect.Effect<A, E | HttpClientError.HttpClientError, R>
}

/**
 * Where a client may start an exchange without an effect, for a caller that sends one request
 * after another from a single suspension of its fiber (a batch worker): the request is sent at
 * once and `resume` called once with what the fiber would resume with, an `Exit` when the
 * result is already known (a built-in read of a complete 2xx body). Returns `false`, sending
 * nothing, when the request needs the client's effect (a client span, an upload, a URL it
 * cannot send, whose failure the effect builds). A registry symbol, as {@link ExchangeKey}.
 */
export const StartKey = Symbol.for("@volley/core/HttpClient/start")

type Starting = {
  readonly [StartKey]?: <A, E, R>(
    request: HttpClientRequest.HttpClientRequest,
    kind: ExchangeRead,
    handle: Read<A, E, R>,
    read: Read<A, E, R>,
    fiber: Fiber.Fiber<unknown, unknown>,
    inFlight: InFlight,
    resume: (effect: Effect.Effect<A, E | HttpClientError.HttpClientError, R>) => void
  ) => boolean
}

// What a handle from `onResponse` reads from a 2xx response (absent on other handles).
const ReadKey = Symbol.for("@volley/core/internal/http/exchange/read")
type Reading = {
  readonly [ReadKey]?: { readonly kind: ExchangeRead; readonly read: Read<unknown, unknown, unknown> }
}

/** The body as bytes: the default read of a batch and `Http.getBytes`. */
export const readBytes = (
  response: HttpClientResponse.HttpClientResponse
): Effect.Effect<Uint8Array, HttpClientError.HttpClientError> =>
  (response as WithBytes)[BytesKey] ?? Effect.map(response.arrayBuffer, (buffer) => new Uint8Array(buffer))

/** The body as text (UTF-8). */
export const readText = (
  response: HttpClientResponse.HttpClientResponse
): Effect.Effect<string, HttpClientError.HttpClientError> => response.text

/**
 * What to do with a response: `read` it when its status is 2xx, follow it when it is a redirect
 * (./redirect.ts: the next hop's response comes back here), else fail with a `StatusCodeError`
 * once its body is drained. `consumes`: `read` always reads the whole body or fails reading it
 * (as the built-in reads do, whoever passes them), so it needs no `release` on failure. Build it
 * once per call site, not per request.
 */
export const onResponse = <A, E, R>(
  read: Read<A, E, R>,
  consumes: boolean
): Read<A, E | HttpClientError.HttpClientError | RedirectError | RetryError, R | HttpClient.HttpClient> => {
  const given: unknown = read
  const kind: ExchangeRead = given === readText ? "text" : given === readBytes ? "bytes" : "custom"
  const checked: Read<A, E, R> =
    consumes || kind !== "custom" ? read : (response) => Effect.onError(read(response), () => release(response))
  const handle: Read<A, E | HttpClientError.HttpClientError | RedirectError | RetryError, R | HttpClient.HttpClient> = (
    response
  ) =>
    response.status >= 200 && response.status < 300
      ? checked(response)
      : isRedirect(response)
        ? follow(response, handle, () => statusError(response))
        : statusError(response)
  return Object.assign(handle, { [ReadKey]: { kind, read } })
}

/**
 * Runs one request through `client` and hands its response to `handle` (see {@link onResponse}).
 * `fiber`: the fiber that will run the effect, in the context it will run in, when the caller
 * holds it (`Http.*`): the client then decides how to send the request now, not in a step of its own.
 * `inFlight`: where the client may leave the request for `fiber` to abort when it is interrupted,
 * instead of handling the interrupt itself (only for a fiber that does, see {@link InFlight}).
 */
export const exchange = <A, E, R, E2, R2>(
  client: HttpClient.HttpClient.With<E2, R2>,
  request: HttpClientRequest.HttpClientRequest,
  handle: Read<A, E, R>,
  fiber?: Fiber.Fiber<unknown, unknown>,
  inFlight?: InFlight
): Effect.Effect<A, E | E2, R | R2> => {
  const reading = (handle as Reading)[ReadKey]
  const exchanging = reading === undefined ? undefined : (client as Exchanging)[ExchangeKey]
  // A client offering the exchange is a platform's own, never a `Retry.withPolicy` wrapper.
  if (exchanging !== undefined) {
    const read = reading!.read as Read<A, E, R>
    return exchanging(request, reading!.kind, handle, read, fiber, inFlight) as Effect.Effect<A, E | E2, R | R2>
  }
  // The caller applies the retry policy: a `Retry.withPolicy` wrapper anywhere under `client`
  // (however many transforms sit above it) passes the request through instead of retrying again.
  return Effect.flatMap(Effect.mapError(executeApplied(client, request), redactInvalidUrl), handle)
}

// Another client's `InvalidUrlError` (Effect's `HttpClient.make` fails a URL that does not parse
// with one) holds the request with the URL as volley shows it: Effect's message misses a password
// holding a `/`, `?` or `#`. Never sent, so nothing else reads that URL. The URL parser's error,
// its cause, keeps the text it refused as its enumerable `input`: redacted in place, as volley's
// NodeHttpClient does with its own. Its message says what to fix, as NodeHttpClient's does:
// Effect's says only "InvalidUrl error".
const redactInvalidUrl = <E>(error: E): E => {
  if (!HttpClientError.isHttpClientError(error) || error.reason._tag !== "InvalidUrlError") return error
  const reason = error.reason
  const parse = reason.cause instanceof Url.UrlError ? reason.cause.cause : undefined
  if (parse instanceof TypeError && "input" in parse && typeof parse.input === "string") {
    parse.input = redactUrl(parse.input)
  }
  const url = redactUrl(reason.request.url)
  const description = reason.description ?? (parse === undefined ? undefined : UNPARSED_URL)
  if (url === reason.request.url && description === reason.description) return error
  return new HttpClientError.HttpClientError({
    reason: new HttpClientError.InvalidUrlError({
      request: HttpClientRequest.setUrl(reason.request, url),
      cause: reason.cause,
      ...(description === undefined ? {} : { description })
    })
  }) as E
}

const UNPARSED_URL = "the URL does not parse (an absolute http:// or https:// URL is needed)"

/**
 * Starts one request through `client` without an effect (see {@link StartKey}), for `fiber`,
 * suspended until `resume` is called; `false` when the client cannot, and nothing was sent:
 * run {@link exchange} instead.
 */
export const start = <A, E, R>(
  client: HttpClient.HttpClient,
  request: HttpClientRequest.HttpClientRequest,
  handle: Read<A, E, R>,
  fiber: Fiber.Fiber<unknown, unknown>,
  inFlight: InFlight,
  resume: (effect: Effect.Effect<A, E | HttpClientError.HttpClientError, R>) => void
): boolean => {
  const reading = (handle as Reading)[ReadKey]
  const starting = reading === undefined ? undefined : (client as Starting)[StartKey]
  if (starting === undefined) return false
  return starting(request, reading!.kind, handle, reading!.read as Read<A, E, R>, fiber, inFlight, resume)
}

/** Largest error body drained to keep its connection; a larger or unannounced one is aborted. */
export const MAX_DRAINED_BYTES = 64 * 1024

/**
 * Longest a small error body is read to keep its connection (64 KiB take half a second at
 * 1 Mbit/s); one still arriving then is aborted. Without it an origin that stalls its 503's
 * body held each attempt for the client's body timeout (30 s), the status long known.
 */
export const MAX_DRAIN_MILLIS = 1000

/**
 * A non-2xx response is a `StatusCodeError`. A body announced as at most 64 KiB is read first
 * (for at most a second), so its connection is reused; a larger one, or one of unknown length,
 * is aborted (its socket closed) rather than read: a hostile 503 with a 300 MB body costs no
 * memory. The read is capped at 64 KiB after decompression too (for clients that honour
 * `MaxBodySize`, as NodeHttpClient does), so a small compressed body that inflates to gigabytes
 * is aborted as well.
 */
export const statusError = (
  response: HttpClientResponse.HttpClientResponse
): Effect.Effect<never, HttpClientError.HttpClientError> =>
  Effect.flatMap(drain(response), () =>
    Effect.fail(
      new HttpClientError.HttpClientError({
        reason: new HttpClientError.StatusCodeError({ request: response.request, response })
      })
    )
  )

/**
 * Reads a small error body to its end (its connection is reused), else aborts it; one that
 * takes longer than {@link MAX_DRAIN_MILLIS} is aborted then (interrupting the read does).
 */
export const drain = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> => {
  const length = response.headers["content-length"]
  return length !== undefined && Number(length) <= MAX_DRAINED_BYTES
    ? Effect.asVoid(
        Effect.timeoutOption(
          Effect.ignore(Effect.provideService(readBytes(response), MaxBodySize, MAX_DRAINED_BYTES)),
          MAX_DRAIN_MILLIS
        )
      )
    : release(response)
}

/**
 * Discards what is left of a body that may be unread: starts reading it and interrupts at
 * once, which makes the client abort the body (and close its socket) if it is still arriving.
 * A body already read is left as it is. Without this an unread body holds its connection
 * until garbage collection.
 */
export const release = (response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> =>
  Effect.flatMap(Effect.forkChild(readBytes(response), { startImmediately: true }), Fiber.interrupt)
