/**
 * Redirects, followed for every volley request (`Http.*` and every `Fanout` form) by default, as
 * requests, aiohttp, httpx, got and fetch do:
 *
 * - 301, 302, 303, 307 and 308 with a `Location` are followed, at most `maxRedirects` (10) hops;
 *   `0` turns following off, and a 3xx is then a `StatusCodeError` as any non-2xx;
 * - 303 turns the request into a `GET` (a `HEAD` stays one), and so do 301 and 302 for a `POST`
 *   (its body dropped, with `Content-Type`, `Content-Encoding`, `Content-Language` and
 *   `Content-Location`, as Fetch does); 307 and 308 send the same method and body again, which
 *   needs a body that can be sent twice (text, bytes, form data: not a stream, failing with
 *   `"body-not-replayable"`);
 * - a hop to another origin (scheme, host or port) drops `Authorization`, `Cookie`,
 *   `Proxy-Authorization`, a `Host` set by hand and every header named in `sensitiveHeaders`
 *   (an `x-api-key`, say), and they stay dropped for the rest of the chain: those a client
 *   transform adds (`HttpClient.mapRequest(HttpClientRequest.bearerToken(token))` on the client
 *   in the environment) too, on every hop after the chain first left its origin, a hop back to
 *   the first origin included (the transform cannot tell that hop from one to a third party);
 * - a `Location` sent as raw UTF-8 (`/café` unencoded) is decoded as UTF-8 before it is
 *   resolved, as fetch and browsers do (`/caf%C3%A9`);
 * - a hop from `https:` to `http:` is refused unless `allowDowngrade`; a `Location` to another
 *   scheme (`file:`, `ftp:`...) or one that is not a URL is refused; user info in a `Location`
 *   (`http://user:pass@host/`) is removed, never sent;
 * - a hop back to a URL already requested with the same method is a loop;
 * - each refusal fails with a {@link RedirectError} naming the chain, never retried.
 *
 * Each hop is a request of its own: it runs under the retry policy (its retries, `Retry-After`
 * and budget), through the client in the environment, so a proxy layer routes it by its own
 * origin, and a hop that stays down after its retries ends the item (the first request is not
 * sent again). The policy's total `timeout` and a batch's `deadline` bound every hop (a
 * `Retry-After` past them fails at once); an `attemptTimeout` covers the first request's
 * attempt with every hop after it. In a batch with a `perHost` limit, an item gives back its
 * slot at each redirect and takes one at the hop's origin, so every origin keeps to its limit;
 * an adaptive `perHost` also learns each origin's limit from the hops sent there (a
 * `Retry-After` pause holds back new items at that origin, and a hop of an item already running
 * takes its slot there at once but is sent only when the pause ends).
 *
 * The final response is the one `read` sees: `response.request` is the last hop's request, and
 * {@link chain} gives every URL requested to reach it (the last one with its query). Failures
 * name the last hop's request.
 *
 * The policy is a reference ({@link RedirectPolicy}): set it for a layer with {@link layer} or
 * {@link layerConfig}, or for one call or batch with {@link withOptions}.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { chainOf, make, type Options, RedirectPolicy } from "./internal/http/redirect.ts"
import * as Validate from "./Options.ts"

export {
  make,
  type Options,
  type Policy,
  RedirectError,
  RedirectPolicy,
  type RedirectReason
} from "./internal/http/redirect.ts"

/**
 * Provides a validated redirect policy as the {@link RedirectPolicy} for everything built on the
 * layer. Fails with `InvalidOptionsError` when built with a bad option.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Http, Redirects } from "@volley/core"
 * import { NodeHttpClient } from "@volley/node"
 *
 * const Client = Layer.merge(NodeHttpClient.layer(), Redirects.layer({ maxRedirects: 3, sensitiveHeaders: ["x-api-key"] }))
 * const NoRedirects = Redirects.layer({ maxRedirects: 0 })
 * const page = Http.getText("http://127.0.0.1:8080/moved").pipe(Effect.provide(Client))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, Validate.InvalidOptionsError> =>
  Layer.effect(RedirectPolicy, make(options))

/**
 * {@link layer} from `Config` (environment by default): `<prefix>_MAX` (an integer, `0` turns
 * following off), `_ALLOW_DOWNGRADE` (`true` | `false`), `_SENSITIVE_HEADERS` (comma-separated
 * header names). Unset keys keep their defaults.
 *
 * @example
 * ```ts
 * import { Redirects } from "@volley/core"
 *
 * // VOLLEY_REDIRECT_MAX=3 VOLLEY_REDIRECT_SENSITIVE_HEADERS=x-api-key,x-tenant
 * const RedirectsLive = Redirects.layerConfig()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  prefix = "VOLLEY_REDIRECT"
): Layer.Layer<never, Validate.InvalidOptionsError | Config.ConfigError> =>
  Layer.effect(
    RedirectPolicy,
    Effect.flatMap(
      Config.all({
        maxRedirects: Validate.optionalConfig(Config.Int("MAX")),
        allowDowngrade: Validate.optionalConfig(Config.Boolean("ALLOW_DOWNGRADE")),
        sensitiveHeaders: Validate.optionalConfig(Config.Array(Schema.String, "SENSITIVE_HEADERS"))
      }).pipe(Config.nested(prefix)),
      (options) => Validate.configKeys(prefix, configKeys)(make(options))
    )
  )

// The keys `layerConfig` reads each option from, named in its `InvalidOptionsError`s.
const configKeys = { maxRedirects: "MAX", allowDowngrade: "ALLOW_DOWNGRADE", sensitiveHeaders: "SENSITIVE_HEADERS" }

/**
 * Runs `effect` (an `Http.*` call, a batch) under its own redirect options, in place of the
 * layer's. Bad options fail it with `InvalidOptionsError` before anything is sent.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout, Http, Redirects } from "@volley/core"
 *
 * const strict = Http.getText("http://127.0.0.1:8080/login").pipe(Redirects.withOptions({ maxRedirects: 0 }))
 * const batch = Fanout.allSettled(["http://127.0.0.1:8080/a"]).pipe(Redirects.withOptions({ allowDowngrade: true }))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withOptions =
  (options: Options) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Validate.InvalidOptionsError, R> =>
    Effect.flatMap(make(options), (policy) => Effect.provideService(effect, RedirectPolicy, policy))

/**
 * The URLs requested to reach `response`, the first one first (user info removed): the
 * original URL, then each redirect's target, the last being `response.request.url`. One URL
 * when nothing was redirected. Read it in a `read` (of `Http.send` or a batch).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { HttpClientRequest } from "effect/http"
 * import { Http, Redirects } from "@volley/core"
 *
 * const where = Http.send(HttpClientRequest.get("http://127.0.0.1:8080/old"), (response) =>
 *   Effect.succeed({ final: response.request.url, chain: Redirects.chain(response) })
 * )
 * ```
 *
 * @since 0.1.0
 * @category accessors
 */
export const chain = (response: HttpClientResponse.HttpClientResponse): ReadonlyArray<string> => chainOf(response)
