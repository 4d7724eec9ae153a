// One undici dispatcher that routes each request by its origin: a plain Agent for direct
// routes and one proxy agent (with its own pools) per distinct proxy, created on first use.
// Closing or destroying it closes them all.
import { lookup } from "node:dns/promises"
import { isIP } from "node:net"
import type * as Tls from "node:tls"
import * as Undici from "@effect/platform-node/Undici"
import { Proxy } from "@volley/core"
import * as Redacted from "effect/Redacted"
import { SOCKS_CLOSED, toProxyError } from "./errors.ts"

export type TlsOptions = Pick<Tls.ConnectionOptions, "ca" | "cert" | "key" | "servername" | "rejectUnauthorized">

export interface Settings {
  readonly originTls: TlsOptions | undefined
  readonly proxyTls: TlsOptions | undefined
  readonly tunnelHttp: boolean
}

export class RoutingDispatcher extends Undici.Dispatcher {
  readonly config: Proxy.ProxyConfig
  readonly agent: Undici.Agent.Options
  readonly settings: Settings
  readonly direct: Undici.Agent
  readonly proxies = new Map<string, Undici.Dispatcher>()
  closed = false

  constructor(config: Proxy.ProxyConfig, agent: Undici.Agent.Options, settings: Settings) {
    super()
    this.config = config
    this.agent = agent
    this.settings = settings
    this.direct = new Undici.Agent(
      settings.originTls === undefined ? agent : { ...agent, connect: { ...settings.originTls } }
    )
  }

  override dispatch(options: Undici.Dispatcher.DispatchOptions, handler: Undici.Dispatcher.DispatchHandler): boolean {
    const origin = String(options.origin)
    const route = Proxy.route(this.config, origin)
    if (route._tag === "Direct") return this.direct.dispatch(options, handler)
    const proxy = route.proxy
    const url = new URL(origin)
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1")
    if (proxy.protocol !== "socks5" || isIP(hostname) !== 0) {
      return this.via(proxy).dispatch(options, withProxyErrors(handler, proxy, origin))
    }
    // socks5 (unlike socks5h) resolves names locally: undici always sends the name to the
    // proxy, so the request goes to the address instead, with the name kept in Host and as
    // the TLS server name (one agent per name, so a pool never mixes names).
    const fail = (error: Error) =>
      // undici reports failures before a connection exists without a controller, as here.
      handler.onResponseError?.(null as unknown as Undici.Dispatcher.DispatchController, error)
    lookup(hostname).then(({ address }) => {
      // Closed while the name was being resolved: don't open a new pool nobody will close.
      if (this.closed) return fail(new Error("The HTTP client was closed"))
      url.hostname = isIP(address) === 6 ? `[${address}]` : address
      this.via(proxy, hostname).dispatch(
        { ...options, origin: url.origin, headers: withHost(options.headers, new URL(origin).host) },
        withProxyErrors(handler, proxy, origin)
      )
    }, fail)
    return true
  }

  via(proxy: Proxy.ProxyUrl, servername?: string): Undici.Dispatcher {
    // The password is part of the key: the same proxy with other credentials is another route.
    const secret = proxy.password === undefined ? "" : Redacted.value(proxy.password)
    const key = `${proxy.label}\u0000${secret}\u0000${servername ?? ""}`
    let dispatcher = this.proxies.get(key)
    if (dispatcher === undefined) {
      const settings =
        servername === undefined
          ? this.settings
          : { ...this.settings, originTls: { ...this.settings.originTls, servername } }
      dispatcher = makeProxyAgent(proxy, this.agent, settings)
      this.proxies.set(key, dispatcher)
    }
    return dispatcher
  }

  all(): Array<Undici.Dispatcher> {
    return [this.direct, ...this.proxies.values()]
  }

  override close(): Promise<void>
  override close(callback: () => void): void
  override close(callback?: () => void): Promise<void> | void {
    this.closed = true
    const done = Promise.all(this.all().map((d) => d.close())).then(() => {})
    if (callback === undefined) return done
    void done.then(callback)
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === "function" ? null : (a ?? null)
    const callback = typeof a === "function" ? a : b
    this.closed = true
    const done = Promise.all(this.all().map((d) => d.destroy(err))).then(() => {})
    if (callback === undefined) return done
    void done.then(callback)
  }
}

const makeProxyAgent = (proxy: Proxy.ProxyUrl, agent: Undici.Agent.Options, settings: Settings): Undici.Dispatcher => {
  const password = proxy.password === undefined ? "" : Redacted.value(proxy.password)
  if (proxy.protocol === "socks5" || proxy.protocol === "socks5h") {
    // Socks5ProxyAgent builds its per-origin pools itself; only the connect timeout carries over.
    return new Undici.Socks5ProxyAgent(`socks5://${proxy.hostname}:${proxy.port}`, {
      ...(agent.connectTimeout === undefined ? {} : { connectTimeout: agent.connectTimeout }),
      connect: socksConnector(agent.connectTimeout),
      ...(proxy.username === undefined ? {} : { username: proxy.username, password }),
      ...(settings.originTls === undefined ? {} : { requestTls: settings.originTls })
    })
  }
  // Credentials go in a header built here, never into a URL string that could be logged.
  const token =
    proxy.username === undefined
      ? undefined
      : `Basic ${Buffer.from(`${proxy.username}:${password}`).toString("base64")}`
  return new Undici.ProxyAgent({
    ...agent,
    uri: `${proxy.protocol}://${proxy.hostname}:${proxy.port}`,
    proxyTunnel: settings.tunnelHttp,
    ...(token === undefined ? {} : { token }),
    ...(settings.originTls === undefined ? {} : { requestTls: settings.originTls }),
    ...(settings.proxyTls === undefined ? {} : { proxyTls: settings.proxyTls })
  })
}

// The connector for SOCKS5 proxies works around two things in undici's Socks5ProxyAgent:
// - it hands the URL's hostname to the connector as is, and `[::1]` (brackets included) is
//   not something DNS can resolve;
// - it ignores the socket closing during the handshake, so a proxy that drops the connection
//   left the request waiting for the connect timeout. A successful handshake reads at least
//   12 bytes (method choice + shortest CONNECT reply), so a close before that is a failure.
const socksConnector = (timeout: number | null | undefined): Undici.buildConnector.connector => {
  const connector = Undici.buildConnector(typeof timeout === "number" ? { timeout } : {})
  const strip = (host: string) => host.replace(/^\[(.*)\]$/, "$1")
  return (options, callback) =>
    connector(
      {
        ...options,
        hostname: strip(options.hostname),
        ...(options.host === undefined ? {} : { host: strip(options.host) })
      },
      (error, socket) => {
        socket?.once("close", () => {
          if (socket.bytesRead < 12 && socket.listenerCount("error") > 0) {
            socket.emit(
              "error",
              Object.assign(new Error("the SOCKS5 proxy closed the connection during the handshake"), {
                code: SOCKS_CLOSED
              })
            )
          }
        })
        if (error === null) callback(null, socket as NonNullable<typeof socket>)
        else callback(error, null)
      }
    )
}

type Headers = NonNullable<Undici.Dispatcher.DispatchOptions["headers"]>

const withHost = (headers: Undici.Dispatcher.DispatchOptions["headers"], host: string): Headers => {
  if (headers === undefined || headers === null) return { host }
  const isHost = (name: unknown) => String(name).toLowerCase() === "host"
  if (Array.isArray(headers))
    return headers.some((v, i) => i % 2 === 0 && isHost(v)) ? headers : [...headers, "host", host]
  if (Symbol.iterator in headers) return headers
  return Object.keys(headers).some(isHost) ? headers : { ...headers, host }
}

// Forwards every handler call, replacing the error passed to onResponseError/onError by a
// typed proxy error when it is one. A JS Proxy keeps whatever handler style undici uses.
const withProxyErrors = (
  handler: Undici.Dispatcher.DispatchHandler,
  proxy: Proxy.ProxyUrl,
  origin: string
): Undici.Dispatcher.DispatchHandler => {
  const target = URL.parse(origin)?.host ?? origin
  return new globalThis.Proxy(handler, {
    get(inner, property) {
      const value: unknown = Reflect.get(inner, property)
      if (typeof value !== "function") return value
      if (property === "onResponseError") {
        return (controller: unknown, error: unknown) =>
          value.call(inner, controller, toProxyError(error, proxy, target))
      }
      if (property === "onError") return (error: unknown) => value.call(inner, toProxyError(error, proxy, target))
      return value.bind(inner)
    }
  })
}
