/**
 * Effect's `HttpClient` on undici, with the connection pool and timeouts a
 * production client needs.
 *
 * `@effect/platform-node`'s undici client sets no timeouts (a 1 h headers
 * timeout and none for the body) and leaves pool sizing to undici's defaults.
 * This layer validates pool and timeout options when it is built, applies the
 * timeouts inside undici (so a stalled socket fails with a `TransportError`
 * whose cause is undici's `HeadersTimeoutError` / `BodyTimeoutError`), and
 * closes every connection when the layer's scope closes.
 *
 * Requests go straight to undici's `dispatch`, with no promise and no Node
 * stream per response, and a body announced as at most 64 KiB is read before
 * the response is returned (an unread small body never holds its connection);
 * a body that arrived in one piece is read as bytes without a copy. A streamed
 * or form-data request body is sent on the same path (encoded as platform-node
 * encodes it), so its response is decoded, limited and counted like any other.
 *
 * When no span would be recorded for a request, it also skips Effect's generic
 * client wrapper (span, `AbortController`, response tracking): with Effect's
 * default tracer, which records nothing (a program with no tracer configured),
 * and when tracing is off for the request (`HttpClient.TracerDisabledWhen` or
 * `Tracer.DisablePropagation`). The enclosing span's trace context is still
 * sent (`traceparent`, `b3`). That path measured within a few percent of
 * undici's bare `Pool.dispatch` in `pnpm bench http`. Interrupting it still
 * closes the socket, but `HttpClient.withScope` cannot reach it: a larger body
 * left unread holds its connection until it is read or its response is
 * garbage-collected (`bodyTimeout` does not run while undici waits for a
 * reader); `Http.*` never leave one unread. With a tracer that records
 * (OpenTelemetry, for one), every request gets a client span with the HTTP
 * attributes, and its `traceparent`: `HttpClient.execute` through Effect's
 * full wrapper, `Http.*` and traced batches (which always read the body)
 * through a span made the same way without the wrapper's response tracking.
 *
 * Like browsers, fetch, requests and got, it asks for compressed bodies (gzip, deflate, br,
 * zstd) and decodes them as they stream (`decompress`); an identity body never meets zlib.
 * `maxBodySize` bounds what a read takes after decoding, closing the connection when a body
 * goes past it. `http2: true` offers HTTP/2 to TLS origins. Per request or batch, `HttpBody`
 * in `@volley/core` overrides `decompress` and `maxBodySize`. {@link metrics} counts requests.
 *
 * @since 0.1.0
 */
import "./internal/runtime.ts"
import type * as Undici from "@effect/platform-node/Undici"
import * as Validate from "@volley/core/Options"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import { DirectAgent } from "./internal/http/agent.ts"
import * as Client from "./internal/http/client.ts"
import * as Metrics from "./internal/http/metrics.ts"
import * as Tls from "./internal/http/tls.ts"

/**
 * Pool and timeout options.
 *
 * @example
 * ```ts
 * import { NodeHttpClient } from "@volley/node"
 *
 * const options: NodeHttpClient.Options = { connectionsPerOrigin: 16, connectTimeout: "5 seconds", http2: true }
 * const Client = NodeHttpClient.layer(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Maximum keep-alive connections per origin. Requests beyond it queue in undici.
   * @default unlimited
   */
  readonly connectionsPerOrigin?: number | undefined
  /**
   * Longest time an idle keep-alive connection stays open: an upper bound, whatever the server's
   * `Keep-Alive: timeout` hint says (a shorter hint wins; undici closes about 2 s before it).
   * Must be more than 0.
   * @default "4 seconds"
   */
  readonly keepAliveTimeout?: Duration.Input | undefined
  /**
   * Time allowed to open a TCP (and TLS) connection, including a proxy's answer to `CONNECT` or
   * its SOCKS5 handshake; `0` turns the limit off. Timeouts count whole milliseconds, a fraction
   * rounded up.
   * @default "10 seconds"
   */
  readonly connectTimeout?: Duration.Input | undefined
  /**
   * Time allowed from sending the request to receiving the complete response headers, however
   * many informational (1xx) responses come first; `0` turns the limit off (undici's
   * convention), e.g. for a long poll.
   * @default "30 seconds"
   */
  readonly headersTimeout?: Duration.Input | undefined
  /**
   * Longest pause allowed between two chunks of the response body; `0` turns the limit off,
   * e.g. for a server-sent event stream that may stay quiet for long.
   * @default "30 seconds"
   */
  readonly bodyTimeout?: Duration.Input | undefined
  /**
   * TLS options for `https://` origins: `ca` (PEM; replaces Node's trust store, e.g. a private CA),
   * `cert` + `key` (a client certificate; `passphrase`, a string or `Redacted`, for an encrypted
   * key), `servername` (SNI and the name the certificate must match: a host name, without a port), `minVersion` (`"TLSv1.2"`,
   * `"TLSv1.3"`). Turning verification off is spelled
   * `rejectUnauthorized: false`, on purpose visible in review; never do it outside tests. The same
   * names as `NodeProxy`'s `originTls`. `null` counts as unset; anything else that is not an object
   * of these fails with `InvalidOptionsError`.
   * @default Node's defaults (its trust store, TLS 1.2 or later)
   */
  readonly tls?: TlsOptions | undefined
  /**
   * Ask for compressed bodies (`Accept-Encoding: gzip, deflate, br, zstd`) and decode them as
   * they stream, whatever reads them (`Http.*`, batches, `response.stream`). Response headers stay
   * as the server sent them (`Content-Length` counts the wire bytes, and undici checks it on
   * them). An `Accept-Encoding` a request sets itself is sent as it is, and its response is
   * still decoded; `false` sends none and hands bodies over as they came. A coding Node cannot
   * decode is handed over as it came; a chain of more than 5 codings fails the read with a
   * `DecodeError` (each would be a zlib stream). Per request or batch: `HttpBody.withDecompress`.
   * @default true
   */
  readonly decompress?: boolean | undefined
  /**
   * Most bytes a response body may have, counted after decompression: a read past it fails with
   * a `DecodeError` caused by `HttpBody.BodyTooLargeError`, and the connection is closed at once
   * instead of read to its end. An integer >= 1 (`Infinity`: no limit). Per request or batch:
   * `HttpBody.withMaxBodySize`.
   * @default Infinity (no limit)
   */
  readonly maxBodySize?: number | undefined
  /**
   * Offer HTTP/2 to `https://` origins (ALPN; undici's `allowH2`): an origin that accepts it
   * carries a batch's requests as streams of one connection (at most 100 at a time per
   * connection, fewer if the server says so). The same timeouts, interruption and per-host
   * limits apply. Plain `http://` stays HTTP/1.1. Request headers HTTP/2 forbids (`TE` other
   * than `trailers`, `HTTP2-Settings`, `Proxy-Connection`) are then dropped from `https://` requests, as curl does:
   * sent, they would make undici destroy the connection, failing every request on it.
   * @default false
   */
  readonly http2?: boolean | undefined
}

/**
 * TLS options for connections to origins.
 *
 * @example
 * ```ts
 * import { readFileSync } from "node:fs"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const tls: NodeHttpClient.TlsOptions = { ca: readFileSync("private-ca.pem"), minVersion: "TLSv1.3" }
 * const Client = NodeHttpClient.layer({ tls })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type TlsOptions = Tls.TlsOptions

/**
 * The direct client's metrics, in the registry of the context its layer is built in (as
 * `NodeBlocking.metrics`):
 * `volley_http_requests_total` (counter, attributes `origin` and `status_class`: `1xx`..`5xx`,
 * or `error` when no response came), `volley_http_request_duration_ms` (histogram: from sending
 * to the end of the body or the failure), `volley_http_in_flight` (gauge per `origin`: the
 * requests in flight of every client that records in the registry, `NodeProxy`'s included) and
 * `volley_http_body_bytes_read_total` (counter per `origin`: body bytes off the wire, before
 * decoding). Counters and the gauge are published within 100 ms of a change, requests stalled
 * or not, and at once when a client's last request in flight at the origin ends, so they are
 * exact after a batch; the histogram is exact at every read (its state is registered as the
 * metric's hooks, so updating it by hand does nothing). An upgrade request (served by
 * platform-node's client) is counted from sending to its response head, with no body bytes.
 * Retries and redirects are counted by `@volley/core` (`volley_http_retries_total`,
 * `volley_http_redirects_total`). Each origin met adds its series to the registry (1.3-7 KB),
 * kept for the registry's life: a client that meets a great many origins (a crawler) grows it
 * with each, so record such a client's metrics in a registry of its own or remove stale series.
 *
 * @example
 * ```ts
 * import { Metric } from "effect"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const ok = Metric.value(
 *   Metric.withAttributes(NodeHttpClient.metrics.requests, { origin: "http://127.0.0.1:8080", status_class: "2xx" })
 * )
 * ```
 *
 * @since 0.1.0
 * @category metrics
 */
export const metrics = Metrics.metrics

/**
 * Options after validation, in the units undici takes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const resolved: NodeHttpClient.ResolvedOptions = Effect.runSync(NodeHttpClient.resolveOptions({ bodyTimeout: "1 minute" }))
 * resolved.bodyTimeoutMs // 60000
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedOptions {
  readonly agent: Undici.Agent.Options
  readonly headersTimeoutMs: number
  readonly bodyTimeoutMs: number
  readonly decompress: boolean
  /** `Infinity`: no limit. */
  readonly maxBodySize: number
  /** Whether HTTP/2 is offered to `https://` origins (`agent.allowH2`). */
  readonly http2: boolean
}

/**
 * Validates options; fails with an `InvalidOptionsError` naming the first bad one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const bad = NodeHttpClient.resolveOptions({ connectionsPerOrigin: 0 }) // fails: connectionsPerOrigin must be an integer >= 1
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolveOptions = Effect.fnUntraced(function* (given?: Options) {
  // `null` from JavaScript is no options, as `undefined` is; a string (say) is not options at all.
  const options = yield* Validate.record("options", given ?? {})
  const connections = yield* Validate.optional(options.connectionsPerOrigin, (n) =>
    Validate.positiveInt("connectionsPerOrigin", n)
  )
  // undici rejects a keep-alive timeout of 0 (on the first request, not here): check it now.
  const keepAlive = yield* Validate.duration("keepAliveTimeout", options.keepAliveTimeout ?? "4 seconds", {
    positive: true
  })
  const connect = yield* Validate.duration("connectTimeout", options.connectTimeout ?? "10 seconds")
  const headers = yield* Validate.duration("headersTimeout", options.headersTimeout ?? "30 seconds")
  const body = yield* Validate.duration("bodyTimeout", options.bodyTimeout ?? "30 seconds")
  const tls = yield* Tls.validate("tls", options.tls)
  const decompress = yield* Validate.oneOf("decompress", options.decompress ?? true, [true, false])
  const http2 = yield* Validate.oneOf("http2", options.http2 ?? false, [true, false])
  const maxBodySize = yield* Validate.optional(options.maxBodySize, (bytes) =>
    bytes === Number.POSITIVE_INFINITY ? Effect.succeed(bytes) : Validate.positiveInt("maxBodySize", bytes)
  )
  const resolved: ResolvedOptions = {
    agent: {
      ...(connections === undefined ? {} : { connections }),
      // undici 8 offers HTTP/2 unless told not to: keep it opt-in.
      allowH2: http2,
      keepAliveTimeout: wholeMillis(keepAlive),
      // An upper bound, not a default: a server's `Keep-Alive: timeout=30` hint (which undici
      // otherwise follows up to 10 minutes) must not keep idle sockets open longer.
      keepAliveMaxTimeout: wholeMillis(keepAlive),
      connectTimeout: wholeMillis(connect),
      ...(tls === undefined ? {} : { connect: tls })
    },
    headersTimeoutMs: wholeMillis(headers),
    bodyTimeoutMs: wholeMillis(body),
    decompress,
    maxBodySize: maxBodySize ?? Number.POSITIVE_INFINITY,
    http2
  }
  return resolved
})

/**
 * Builds an `HttpClient` layer on a dispatcher of your own (a proxy agent, a
 * mock agent), with the same validated pool options and timeouts as
 * {@link layer}. The dispatcher is destroyed when the layer's scope closes.
 *
 * @example
 * ```ts
 * import * as Undici from "@effect/platform-node/Undici"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const viaProxy = NodeHttpClient.layerWith((agent) => new Undici.ProxyAgent({ ...agent, uri: "http://127.0.0.1:3128" }))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (
  makeDispatcher: (agent: Undici.Agent.Options) => Undici.Dispatcher,
  options?: Options
): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError> =>
  Layer.effect(
    HttpClient.HttpClient,
    Effect.gen(function* () {
      const resolved = yield* resolveOptions(options)
      const dispatcher = yield* Effect.acquireRelease(
        Effect.sync(() => makeDispatcher(resolved.agent)),
        (dispatcher) => Effect.promise(() => dispatcher.destroy())
      )
      return yield* Client.make(dispatcher, resolved)
    })
  )

/**
 * Provides `HttpClient` on a fresh undici `Agent`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http } from "@volley/core"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const program = Http.getText("http://127.0.0.1:8080/").pipe(
 *   Effect.provide(NodeHttpClient.layer({ connectionsPerOrigin: 16, headersTimeout: "5 seconds" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError> =>
  layerWith((agent) => new DirectAgent(agent), options)

/**
 * Reads {@link Options} from `Config` (by default the environment), under `prefix`:
 * `VOLLEY_HTTP_CONNECTIONS_PER_ORIGIN`, `_KEEP_ALIVE_TIMEOUT`, `_CONNECT_TIMEOUT`,
 * `_HEADERS_TIMEOUT`, `_BODY_TIMEOUT` (durations such as `"5 seconds"`), `_DECOMPRESS` and
 * `_HTTP2` (booleans), `_MAX_BODY_SIZE` (bytes). Unset variables keep
 * the defaults; a value that does not parse fails the layer with a `ConfigError`, one out of range
 * with an `InvalidOptionsError` whose message names the variable.
 * `Resilience.layerConfig()` reads its rate limit and circuit breaker under the same prefix.
 *
 * @example
 * ```ts
 * import { NodeHttpClient } from "@volley/node"
 *
 * // VOLLEY_HTTP_HEADERS_TIMEOUT="5 seconds" node app.ts
 * const client = NodeHttpClient.layerConfig()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  prefix = "VOLLEY_HTTP"
): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError | Config.ConfigError> =>
  Layer.unwrap(
    Effect.flatMap(
      Config.all({
        connectionsPerOrigin: Validate.optionalConfig(Config.Int("CONNECTIONS_PER_ORIGIN")),
        keepAliveTimeout: Validate.optionalConfig(Config.Duration("KEEP_ALIVE_TIMEOUT")),
        connectTimeout: Validate.optionalConfig(Config.Duration("CONNECT_TIMEOUT")),
        headersTimeout: Validate.optionalConfig(Config.Duration("HEADERS_TIMEOUT")),
        bodyTimeout: Validate.optionalConfig(Config.Duration("BODY_TIMEOUT")),
        decompress: Validate.optionalConfig(Config.Boolean("DECOMPRESS")),
        http2: Validate.optionalConfig(Config.Boolean("HTTP2")),
        maxBodySize: Validate.optionalConfig(Config.Number("MAX_BODY_SIZE"))
      }).pipe(Config.nested(prefix)),
      // Checked here as well as by `layer`, so that a bad value's error names its variable.
      (options) => Effect.as(Validate.configKeys(prefix, configKeys)(resolveOptions(options)), layer(options))
    )
  )

// The keys `layerConfig` reads each option from, named in its `InvalidOptionsError`s.
const configKeys = {
  connectionsPerOrigin: "CONNECTIONS_PER_ORIGIN",
  keepAliveTimeout: "KEEP_ALIVE_TIMEOUT",
  connectTimeout: "CONNECT_TIMEOUT",
  headersTimeout: "HEADERS_TIMEOUT",
  bodyTimeout: "BODY_TIMEOUT",
  maxBodySize: "MAX_BODY_SIZE"
}

// undici takes whole milliseconds: a proxy tunnel's CONNECT (headers timeout: the connect
// timeout) refused "1500 micros" or a third of a second with "headersTimeout must be a positive
// integer or zero", failing every tunnelled request. Rounded up, so that a limit under 1 ms stays
// a limit rather than becoming 0 (off).
const wholeMillis = (duration: Duration.Duration): number => Math.ceil(Duration.toMillis(duration))
