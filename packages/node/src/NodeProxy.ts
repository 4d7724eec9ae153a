/**
 * `HttpClient` layers that reach the network through proxies: the same program runs
 * direct, through an HTTP(S) proxy or through SOCKS5 depending on the layer you provide.
 *
 * Each request is routed by its origin with {@link Proxy.route}: direct requests use a
 * plain undici `Agent`; proxied ones use undici's `ProxyAgent` (HTTPS tunnelled with
 * `CONNECT`, Basic auth, `https://` proxies), an `Agent` of pools to the proxy for plain HTTP
 * forwarded in absolute form (dropped, as direct ones are, once their connections close) or, for
 * SOCKS5 (username/password), an `Agent` whose connections are tunnels opened with the
 * handshake of undici's `Socks5ProxyAgent`; one per distinct proxy. Every route keeps its
 * own pool per origin, built from the same options (`connectionsPerOrigin`,
 * `keepAliveTimeout`, timeouts), and all of them are destroyed when the layer's scope closes.
 * They come from the undici that `@effect/platform-node` bundles.
 *
 * A proxy failure fails the request at once (no reconnect loop) with an `HttpClientError`
 * whose `TransportError` cause is a `Proxy.ProxyConnectionError` or
 * `Proxy.ProxyAuthenticationError` naming the proxy with its password redacted;
 * `Proxy.unwrapErrors` lifts them into the error channel. That covers every failure on the
 * way to the proxy (connecting, TLS to an `https://` proxy, `CONNECT`, the SOCKS5
 * handshake); what fails with the origin through the tunnel (its certificate, say) stays a
 * plain `TransportError`. On plain HTTP forwarded to a proxy, a 401 is a response like the
 * origin's: tinyproxy answers a wrong password that way (see {@link Options.tunnelHttp}).
 *
 * @since 0.1.0
 */
import "./internal/runtime.ts"
import type * as Undici from "@effect/platform-node/Undici"
import * as Validate from "@volley/core/Options"
import * as Proxy from "@volley/core/Proxy"
import * as Cause from "effect/Cause"
import type * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import * as Client from "./internal/http/client.ts"
import * as Tls from "./internal/http/tls.ts"
import { RoutingDispatcher } from "./internal/proxy/dispatcher.ts"
import * as NodeHttpClient from "./NodeHttpClient.ts"

/**
 * Pool, timeout and TLS options of a proxied client.
 *
 * @example
 * ```ts
 * import { readFileSync } from "node:fs"
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 * import { NodeProxy } from "@volley/node"
 *
 * const options: NodeProxy.Options = { proxyTls: { ca: readFileSync("proxy-ca.pem") }, tunnelHttp: true }
 * const config = Effect.runSync(Proxy.make({ all: "https://127.0.0.1:3129" }))
 * const Client = NodeProxy.layer(config, options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Omit<NodeHttpClient.Options, "tls"> {
  /**
   * TLS options for connections to origins, direct or through a proxy (e.g. `ca` for a
   * private CA). The proxy never sees inside a tunnel, so this is where origin trust goes.
   * `null` counts as unset, as for `proxyTls`.
   * @default Node's default trust store
   */
  readonly originTls?: Tls.TlsOptions | undefined
  /**
   * TLS options for the connection to an `https://` proxy itself (e.g. its `ca`). A proxy
   * certificate they don't trust fails the request with a `Proxy.ProxyConnectionError`.
   * @default Node's default trust store
   */
  readonly proxyTls?: Tls.TlsOptions | undefined
  /**
   * Tunnel plain-HTTP requests with `CONNECT` too, instead of sending them to the proxy in
   * absolute form. Some proxies only allow `CONNECT` to port 443, hence off by default. A
   * proxy that answers a wrong password with 401 rather than 407 (tinyproxy) is then told
   * apart from the origin: only the proxy answers `CONNECT`, so it is a
   * `Proxy.ProxyAuthenticationError`. Anything but `true`, `false` or unset fails the layer with
   * `InvalidOptionsError`.
   * @default false
   */
  readonly tunnelHttp?: boolean | undefined
}

/**
 * Builds the routing undici dispatcher behind {@link layer}, for use with
 * `NodeHttpClient.layerWith` or your own undici calls. You own it: destroy it when done.
 * Throws `InvalidOptionsError` for what {@link layer} fails with: a `config` not built by
 * `Proxy.make` or `Proxy.fromEnv`, TLS options or a `tunnelHttp` of the wrong type (as undici's
 * `Agent` throws for its own options).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 * import { NodeHttpClient, NodeProxy } from "@volley/node"
 *
 * const config = Effect.runSync(Proxy.make({ all: "socks5h://127.0.0.1:1080" }))
 * const client = NodeHttpClient.layerWith((agent) => NodeProxy.makeDispatcher(config, agent))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeDispatcher = (
  config: Proxy.ProxyConfig,
  agent: Undici.Agent.Options = {},
  options: Pick<Options, "originTls" | "proxyTls" | "tunnelHttp"> = {}
): Undici.Dispatcher => {
  // No error channel here: a wrong option died later, in routing or in a TLS handshake.
  const checked = Effect.runSyncExit(checkRoute(config, options))
  if (Exit.isFailure(checked)) throw Cause.squash(checked.cause)
  return new RoutingDispatcher(config, agent, checked.value)
}

// What routing takes from `config` and the options, checked: null options are none, as
// `undefined` is, and `null` is unset for each TLS option.
const checkRoute = (config: Proxy.ProxyConfig, given: Options | null | undefined) =>
  Effect.gen(function* () {
    const options = yield* Validate.record("options", given ?? {})
    // A configuration not built by Proxy.make (its options, `{ all: url }`, say) died in routing.
    if (!isProxyConfig(config)) {
      return yield* new Validate.InvalidOptionsError({
        option: "config",
        reason: "must be a ProxyConfig built by Proxy.make or Proxy.fromEnv (not their options)"
      })
    }
    return {
      originTls: yield* Tls.validate("originTls", options.originTls),
      proxyTls: yield* Tls.validate("proxyTls", options.proxyTls),
      // A string "false" would otherwise be truthy in the dispatcher and tunnel every request.
      tunnelHttp: yield* Validate.oneOf("tunnelHttp", options.tunnelHttp ?? false, [true, false])
    }
  })

/**
 * Provides `HttpClient` routed by `config`. Logs the routes (passwords redacted) at
 * Debug level when built, and gives each traced request's client span a `proxy.route`
 * attribute: `direct`, or the proxy's URL with its password redacted. A `config` not built by
 * `Proxy.make` or `Proxy.fromEnv` (their options, say) fails the build with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Http, Proxy } from "@volley/core"
 * import { NodeProxy } from "@volley/node"
 *
 * const viaSquid = Layer.unwrap(
 *   Effect.map(Proxy.make({ all: "http://alice:s3cret@127.0.0.1:3128" }), (config) => NodeProxy.layer(config))
 * )
 * const program = Http.getText("https://example.com/").pipe(Effect.provide(viaSquid))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: Proxy.ProxyConfig,
  given?: Options
): Layer.Layer<HttpClient.HttpClient, Validate.InvalidOptionsError> =>
  Layer.unwrap(
    Effect.gen(function* () {
      const route = yield* checkRoute(config, given)
      const options = given ?? {}
      // `tls: null` is unset, as `null` is for every TLS option.
      if ((options as NodeHttpClient.Options).tls != null) {
        return yield* new Validate.InvalidOptionsError({
          option: "tls",
          reason: "a proxied client takes originTls (for origins) and proxyTls (for the proxy) instead"
        })
      }
      const routed = Layer.effect(
        HttpClient.HttpClient,
        Effect.gen(function* () {
          yield* Effect.logDebug("HttpClient proxy routes").pipe(Effect.annotateLogs(describe(config)))
          const client = yield* HttpClient.HttpClient
          const attributes = (url: URL) => ({ "proxy.route": routeLabel(config, url) })
          return HttpClient.transform(client, (effect) =>
            Effect.provideService(effect, Client.SpanAttributes, attributes)
          )
        })
      )
      return routed.pipe(
        Layer.provide(NodeHttpClient.layerWith((agent) => new RoutingDispatcher(config, agent, route), options))
      )
    })
  )

/**
 * Provides `HttpClient` routed by the proxy environment (`HTTP_PROXY`, `HTTPS_PROXY`,
 * `ALL_PROXY`, `NO_PROXY`, lower case winning; see `Proxy.fromEnv`), read through `Config`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http } from "@volley/core"
 * import { NodeProxy } from "@volley/node"
 *
 * // HTTPS_PROXY=http://proxy.corp.example:3128 NO_PROXY=.corp.example node app.ts
 * const program = Http.getText("https://example.com/").pipe(Effect.provide(NodeProxy.layerConfig()))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  given?: Options & Pick<Proxy.Options, "rules" | "proxyLoopback">
): Layer.Layer<
  HttpClient.HttpClient,
  Validate.InvalidOptionsError | Config.ConfigError | Proxy.InvalidProxyUrlError | Proxy.InvalidNoProxyError
> =>
  Layer.unwrap(
    Effect.gen(function* () {
      // Read in the layer, not in the call: `layerConfig(null)` threw out of the call itself.
      const options = yield* Validate.record("options", given ?? {})
      const config = yield* Proxy.fromEnv({ rules: options.rules, proxyLoopback: options.proxyLoopback })
      return layer(config, options)
    })
  )

const isProxyConfig = (config: unknown): config is Proxy.ProxyConfig => {
  if (typeof config !== "object" || config === null) return false
  const { noProxy, rules } = config as Partial<Proxy.ProxyConfig>
  return typeof noProxy === "object" && noProxy !== null && Array.isArray(noProxy.patterns) && Array.isArray(rules)
}

const routeLabel = (config: Proxy.ProxyConfig, url: URL): string => {
  const route = Proxy.route(config, url)
  return route._tag === "Direct" ? "direct" : route.proxy.label
}

const describe = (config: Proxy.ProxyConfig): Record<string, string> => ({
  http: config.http?.label ?? "-",
  https: config.https?.label ?? "-",
  all: config.all?.label ?? "-",
  noProxy: config.noProxy.source,
  rules: config.rules
    .map((rule) => `${rule.match} -> ${rule.route._tag === "Direct" ? "direct" : rule.route.proxy.label}`)
    .join(", "),
  proxyLoopback: String(config.proxyLoopback)
})
