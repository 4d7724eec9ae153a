// One undici dispatcher that routes each request by its origin: a plain Agent for direct
// routes and one agent per distinct proxy (undici's ProxyAgent for HTTP(S) proxies' tunnels and
// an Agent of pools to the proxy for the plain HTTP they forward, an Agent whose connections are
// SOCKS5 tunnels for SOCKS5), each with its own per-origin pools built
// from the same pool options, created on first use. Closing or destroying it closes them all.
// Failures on the way to a proxy are marked where they happen (see errors.ts).
import { lookup } from "node:dns/promises"
import { isIP, Socket } from "node:net"
import { Duplex } from "node:stream"
import * as Undici from "@effect/platform-node/Undici"
import * as Proxy from "@volley/core/Proxy"
import * as Redacted from "effect/Redacted"
import { DirectAgent, destroyAs, endOpening, tracked } from "../http/agent.ts"
import type { ResolvedTls } from "../http/tls.ts"
import { markHop, TunnelRefusedError, toProxyError } from "./errors.ts"

export interface Settings {
  readonly originTls: ResolvedTls | undefined
  readonly proxyTls: ResolvedTls | undefined
  readonly tunnelHttp: boolean
  /**
   * Most per-name agents kept for `socks5://` routes (names resolved locally need one agent per
   * name); beyond it the least recently used one is closed, so a crawler's memory stays bounded.
   */
  readonly maxNamedRoutes?: number | undefined
}

const MAX_NAMED_ROUTES = 256

export class RoutingDispatcher extends Undici.Dispatcher {
  // Private, so that no inspection of this dispatcher shows it: a lone user name (`http://<token>@proxy`)
  // is in clear in its ProxyUrl, and usually a token.
  readonly #config: Proxy.ProxyConfig
  readonly agent: Undici.Agent.Options
  readonly settings: Settings
  readonly direct: Undici.Agent
  readonly proxies = new Map<string, Undici.Dispatcher>()
  // Per-name agents of socks5:// routes, least recently used first.
  readonly named = new Map<string, Undici.Dispatcher>()
  // Evicted agents, closing once their requests are done.
  readonly retiring = new Set<Undici.Dispatcher>()
  // The distinct credentials (user name and password) met so far: a route's key names them by
  // their index here, never in clear (the keys show in an inspection of this dispatcher).
  readonly credentials: Array<Redacted.Redacted<string>> = []
  closed = false

  constructor(config: Proxy.ProxyConfig, agent: Undici.Agent.Options, settings: Settings) {
    super()
    this.#config = config
    this.agent = agent
    this.settings = settings
    this.direct = new DirectAgent(
      settings.originTls === undefined ? agent : { ...agent, connect: { ...settings.originTls } }
    )
  }

  override dispatch(options: Undici.Dispatcher.DispatchOptions, handler: Undici.Dispatcher.DispatchHandler): boolean {
    // Closed: the (closed) direct agent fails the request as undici does, and no proxy agent
    // is created that nobody would close.
    if (this.closed) return this.direct.dispatch(options, handler)
    const origin = String(options.origin)
    const route = Proxy.route(this.#config, origin)
    if (route._tag === "Direct") return this.direct.dispatch(options, handler)
    const proxy = route.proxy
    const fail = (error: Error) =>
      // undici reports failures before a connection exists without a controller, as here.
      handler.onResponseError?.(null as unknown as Undici.Dispatcher.DispatchController, error)
    const unsendable = isSocks(proxy) ? socksCredentialProblem(proxy) : undefined
    if (unsendable !== undefined) {
      // Credentials SOCKS5 cannot carry as given: fail before contacting the proxy (and as the
      // authentication error it is, which no policy retries) rather than drop or mangle them.
      const error = new Proxy.ProxyAuthenticationError({
        proxy: proxy.label,
        target: targetOf(origin),
        reason: `not sent: ${unsendable}`
      })
      queueMicrotask(() => fail(error))
      return true
    }
    const url = new URL(origin)
    const hostname = unbracket(url.hostname)
    if (proxy.protocol !== "socks5" || isIP(hostname) !== 0) {
      const forwarded = !isSocks(proxy) && url.protocol === "http:" && !this.settings.tunnelHttp
      return this.via(proxy, undefined, forwarded).dispatch(options, withProxyErrors(handler, proxy, origin))
    }
    // socks5 (unlike socks5h) resolves names locally: undici always sends the name to the
    // proxy, so the request goes to the address instead, with the name kept in Host and as
    // the TLS server name (one agent per name, so a pool never mixes names).
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

  via(proxy: Proxy.ProxyUrl, servername?: string, forwarded = false): Undici.Dispatcher {
    // The credentials are part of the key: the same proxy with another user name or password is
    // another route. The label is not enough: it hides a lone user name (a token) as `<redacted>@`.
    const key = `${proxy.label}\u0000${this.credentialsIndex(proxy)}\u0000${servername ?? ""}${forwarded ? "\u0000forward" : ""}`
    const routes = servername === undefined ? this.proxies : this.named
    let dispatcher = routes.get(key)
    if (dispatcher === undefined) {
      const settings =
        servername === undefined
          ? this.settings
          : { ...this.settings, originTls: { ...this.settings.originTls, servername } }
      dispatcher = forwarded
        ? forwardingAgent(proxy, this.agent, settings)
        : makeProxyAgent(proxy, this.agent, settings)
    } else if (servername !== undefined) {
      routes.delete(key) // re-inserted below as the most recently used
    }
    routes.set(key, dispatcher)
    if (this.named.size > (this.settings.maxNamedRoutes ?? MAX_NAMED_ROUTES)) this.retire()
    return dispatcher
  }

  credentialsIndex(proxy: Proxy.ProxyUrl): number {
    if (proxy.username === undefined && proxy.password === undefined) return -1
    const value = JSON.stringify([proxy.username ?? "", password(proxy)])
    const index = this.credentials.findIndex((known) => Redacted.value(known) === value)
    return index >= 0 ? index : this.credentials.push(Redacted.make(value)) - 1
  }

  // Closes the least recently used per-name agent; its requests in flight finish first.
  retire(): void {
    const [key, oldest] = this.named.entries().next().value as [string, Undici.Dispatcher]
    this.named.delete(key)
    this.retiring.add(oldest)
    void oldest.close().finally(() => this.retiring.delete(oldest))
  }

  all(): Array<Undici.Dispatcher> {
    return [this.direct, ...this.proxies.values(), ...this.named.values(), ...this.retiring]
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

const isSocks = (proxy: Proxy.ProxyUrl): boolean => proxy.protocol === "socks5" || proxy.protocol === "socks5h"

const makeProxyAgent = (proxy: Proxy.ProxyUrl, agent: Undici.Agent.Options, settings: Settings): Undici.Dispatcher =>
  isSocks(proxy) ? socksAgent(proxy, agent, settings) : httpProxyAgent(proxy, agent, settings)

const httpProxyAgent = (proxy: Proxy.ProxyUrl, agent: Undici.Agent.Options, settings: Settings): Undici.Dispatcher => {
  // Credentials go in a header built here, never into a URL string that could be logged. A
  // password without a user name (`http://:pw@proxy`) is sent with an empty one, as curl does.
  //
  // ProxyAgent is not given the header (`token`): it keeps it in clear on itself and on its
  // Agent, which copies its options into every pool it creates, so a deep `util.inspect` of the
  // client showed it. The clients that talk to the proxy add it to each request they send instead
  // (the CONNECT of a tunnel, a forwarded plain-HTTP request), from this Redacted.
  const authorization = authorizationOf(proxy)
  const uri = `${proxy.protocol}://${proxy.hostname}:${proxy.port}`
  const tunnels = new Set<Duplex>()
  return new TunnellingAgent(tunnels, {
    ...agent,
    uri,
    proxyTunnel: settings.tunnelHttp,
    ...(settings.originTls === undefined ? {} : { requestTls: settings.originTls }),
    ...(settings.proxyTls === undefined ? {} : { proxyTls: settings.proxyTls }),
    // The client that sends CONNECT: its connections are the hop to the proxy.
    clientFactory: (origin, options) =>
      new TunnelClient(origin, {
        connect: toProxy(connectorOf(options)),
        headersTimeout: connectTimeoutOf(agent),
        authorization,
        tunnels
      }),
    // ProxyAgent asks this factory for the pool of each tunnelled origin, with its tunnel connector.
    // Plain HTTP forwarded in absolute form never reaches this agent (see `forwardingAgent`).
    factory: (origin, options) =>
      new Undici.Pool(origin, { ...(options as Undici.Pool.Options), connect: cancellable(connectorOf(options)) })
  })
}

/**
 * A connection attempt undici can give up. undici cancels one that no request waits for any more
 * (its requests were interrupted, see ../http/queued.ts) only through the stream its connector
 * returns, by destroying it; the proxies' tunnel connectors return none (ProxyAgent's is an async
 * function), so such a tunnel ran on until it connected or timed out. Destroying this aborts
 * `signal`, which the steps of the attempt end on (see `cancellable`, `TunnelClient`, `socksAgent`).
 */
class Attempt extends Duplex {
  readonly #abort = new AbortController()
  get signal(): AbortSignal {
    return this.#abort.signal
  }
  override _destroy(error: Error | null, done: (error: Error | null) => void): void {
    this.#abort.abort(error ?? new Undici.errors.RequestAbortedError())
    done(null)
  }
}

/**
 * ProxyAgent's tunnel connector, cancellable: its CONNECT is sent with the attempt's signal (undici
 * then takes it out of the queue to the proxy, or drops its connection to the proxy while the
 * answer is awaited), and `TunnelClient` ends the tunnel on it while the TLS handshake with the
 * origin inside runs. undici itself destroys a connection that arrives once it gave the attempt up.
 */
const cancellable =
  (connect: Undici.buildConnector.connector): Undici.buildConnector.connector =>
  (options, callback) => {
    const attempt = new Attempt()
    connect({ ...options, signal: attempt.signal } as Undici.buildConnector.Options, callback)
    return attempt
  }

/** Destroys `socket`, with the reason, once `signal` aborts. */
const endOnAbort = (signal: AbortSignal, socket: Duplex): void =>
  signal.addEventListener("abort", () => socket.destroy(signal.reason as Error), { once: true })

/**
 * A ProxyAgent whose destruction also ends its open tunnels. undici's leaves a TLS handshake with
 * an origin inside a tunnel (which no pool owns until it succeeds) to run until the connect
 * timeout, its timer keeping the process alive: ending the tunnel under it, with an error, fails it.
 *
 * Only after undici has destroyed its pools' connections (which it does at once, in the call): a
 * TLS socket over a tunnel closes by destroying the tunnel and waiting for its 'close', which a
 * tunnel ended first had already emitted. An HTTP/2 connection waits for its socket's 'close', so
 * the agent's destroy never resolved, and the layer's scope never closed.
 */
class TunnellingAgent extends Undici.ProxyAgent {
  readonly tunnels: Set<Duplex>
  constructor(tunnels: Set<Duplex>, options: Undici.ProxyAgent.Options) {
    super(options)
    this.tunnels = tunnels
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const destroyed = destroyAs(super.destroy.bind(this), a, b)
    endOpening(this.tunnels)
    return destroyed
  }
}

const PROXY_AUTHORIZATION = "proxy-authorization"

const authorizationOf = (proxy: Proxy.ProxyUrl): Redacted.Redacted<string> | undefined =>
  proxy.username === undefined && proxy.password === undefined
    ? undefined
    : Redacted.make(`Basic ${Buffer.from(`${proxy.username ?? ""}:${password(proxy)}`).toString("base64")}`)

// Plain HTTP sent to an HTTP(S) proxy in absolute form (`GET http://origin/path`), one pool per
// origin, as undici's ProxyAgent does. Not ProxyAgent's: it wraps each origin's pool in a
// dispatcher that passes on none of the pool's connection events, which are how its Agent knows
// a pool went idle, so it never dropped one: a client that met many origins through the proxy kept
// a pool for each (about 23 KB) for its life. Here each origin's pool is a pool to the proxy that
// rewrites its requests, and the Agent drops it once its connections have closed.
const forwardingAgent = (proxy: Proxy.ProxyUrl, agent: Undici.Agent.Options, settings: Settings): Undici.Dispatcher => {
  const proxyHref = new URL(`${proxy.protocol}://${proxy.hostname}:${proxy.port}`).href
  const https = proxy.protocol === "https"
  const connectHttp1 = Undici.buildConnector({
    ...(typeof agent.connectTimeout === "number" ? { timeout: agent.connectTimeout } : {}),
    ...settings.proxyTls,
    allowH2: false
  })
  // As ProxyAgent: a certificate for another name is the proxy's (undici's client would
  // otherwise keep the requests queued on it).
  const connect: Undici.buildConnector.connector = https
    ? (options, callback) =>
        connectHttp1(options, (error, socket) => {
          if (error !== null && (error as { readonly code?: unknown }).code === "ERR_TLS_CERT_ALTNAME_INVALID") {
            callback(new Undici.errors.SecureProxyConnectionError(error), null)
          } else if (error !== null) callback(error, null)
          else callback(null, socket)
        })
    : connectHttp1
  const forwarding: Forwarding = {
    authorization: authorizationOf(proxy),
    // The name the proxy's certificate must match, not the origin's (which the Host header names).
    servername: https ? (settings.proxyTls?.servername ?? unbracket(proxy.hostname)) : undefined
  }
  // Each origin's pool has the pool options, and connects to the proxy.
  return new ForwardingAgent({
    ...agent,
    factory: () => new ForwardingPool(proxyHref, { ...agent, allowH2: false, connect: toProxy(connect) }, forwarding)
  })
}

interface Forwarding {
  readonly authorization: Redacted.Redacted<string> | undefined
  readonly servername: string | undefined
}

// undici's message for a 407 to a forwarded request (see errors.ts), kept as ProxyAgent has it.
const FORWARDED_407 = "Proxy Authentication Required (407)"

/**
 * The forwarding pools of one proxy. As ProxyAgent does, it refuses a request's own
 * Proxy-Authorization (the proxy's credentials are the route's) before anything is made for it:
 * refused by the origin's pool instead, the request left that pool behind for good (one that
 * never connects is never dropped), about 19 KB for each origin met so.
 */
class ForwardingAgent extends Undici.Agent {
  override dispatch(options: Undici.Dispatcher.DispatchOptions, handler: Undici.Dispatcher.DispatchHandler): boolean {
    if (hasHeader(options.headers, PROXY_AUTHORIZATION)) {
      throw new Undici.errors.InvalidArgumentError("Proxy-Authorization should be sent in ProxyAgent constructor")
    }
    return super.dispatch(options, handler)
  }
}

/** One origin's connections to the proxy, sending its requests in absolute form. */
class ForwardingPool extends Undici.Pool {
  readonly forwarding: Forwarding
  constructor(proxyHref: string, options: Undici.Pool.Options, forwarding: Forwarding) {
    super(proxyHref, options)
    this.forwarding = forwarding
  }

  override dispatch(options: Undici.Dispatcher.DispatchOptions, handler: Undici.Dispatcher.DispatchHandler): boolean {
    const origin = new URL(String(options.origin))
    const { authorization, servername } = this.forwarding
    const headers = withHost(options.headers, origin.host)
    return super.dispatch(
      {
        ...options,
        path: origin.origin + (options.path || "/"),
        headers:
          authorization === undefined
            ? headers
            : withHeader(headers, PROXY_AUTHORIZATION, Redacted.value(authorization)),
        ...(servername === undefined ? {} : { servername })
      },
      refusing407(handler)
    )
  }
}

// A 407 is the proxy's answer, not the origin's: the request fails with it, as with ProxyAgent.
const refusing407 = (handler: Undici.Dispatcher.DispatchHandler): Undici.Dispatcher.DispatchHandler =>
  new globalThis.Proxy(handler, {
    get(inner, property) {
      const value: unknown = Reflect.get(inner, property)
      if (typeof value !== "function") return value
      if (property === "onResponseStart") {
        return (controller: Undici.Dispatcher.DispatchController, status: number, ...rest: Array<unknown>) =>
          status === 407
            ? inner.onResponseError?.(controller, new Undici.errors.InvalidArgumentError(FORWARDED_407))
            : value.call(inner, controller, status, ...rest)
      }
      return value.bind(inner)
    }
  })

const connectorOf = (options: object): Undici.buildConnector.connector =>
  (options as { readonly connect: Undici.buildConnector.connector }).connect

// Marks the failures of a connector to the proxy: TCP until the socket connects, then TLS
// (for an https:// proxy). The socket is returned, as undici cancels an attempt through it.
//
// ProxyAgent gives the proxy's URL hostname as the TLS server name, brackets and all for
// IPv6 (`[::1]`), and Node then checks the certificate for that string: no certificate has
// it, so an https:// proxy on an IPv6 literal always failed. An IP address is no server name
// either (RFC 6066 forbids it in SNI; Node warns, DEP0123), so a server name that is just the
// address being connected to is dropped: Node then sends no SNI and checks the certificate's
// IP SANs against that address. A `proxyTls.servername` of the user's, a name, stays as is.
const toProxy =
  (connect: Undici.buildConnector.connector): Undici.buildConnector.connector =>
  (options, callback) => {
    let connected = false
    const socket: unknown = connect(withoutAddressAsServername(options), (error, socket) => {
      if (error === null) callback(null, socket)
      else callback(markHop(error, connected ? "tls" : "connect"), null)
    })
    if (socket instanceof Socket) socket.once("connect", () => (connected = true))
    return socket
  }

const withoutAddressAsServername = (options: Undici.buildConnector.Options): Undici.buildConnector.Options => {
  const { servername, ...rest } = options
  const address = servername == null ? "" : unbracket(servername)
  return isIP(address) !== 0 && address === unbracket(options.hostname) ? rest : options
}

// undici's connectors allow 10 s when no connect timeout is given; 0 turns the limit off.
const UNDICI_CONNECT_TIMEOUT = 10_000

const connectTimeoutOf = (agent: Undici.Agent.Options): number =>
  typeof agent.connectTimeout === "number" ? agent.connectTimeout : UNDICI_CONNECT_TIMEOUT

// ProxyAgent opens its tunnels with this client's `connect` (the promise form, the only one
// it uses). Whatever fails there is the proxy's, and a refusal keeps its status: undici's own
// error for it carries the status in its message text only.
//
// The CONNECT exchange is part of opening the connection, so the connect timeout bounds it,
// as it bounds TCP, TLS and the SOCKS5 handshake: undici's connect timeout covers only the
// socket to the proxy, and the request's headers timeout starts once the tunnel exists, so a
// proxy that never answered CONNECT held the request for the client's headers timeout,
// undici's 300 s default. That is this client's headersTimeout (the only timeout undici's
// CONNECT request honours; ProxyAgent sets none on it). Running out fails the request at once.
//
// It also adds the proxy's credentials to each CONNECT (see httpProxyAgent).
class TunnelClient extends Undici.Pool {
  readonly answerTimeout: number
  readonly authorization: Redacted.Redacted<string> | undefined
  // Every tunnel open, for the agent to end (see `TunnellingAgent`).
  readonly tunnels: Set<Duplex>
  constructor(
    origin: string | URL,
    {
      authorization,
      tunnels,
      ...options
    }: Undici.Pool.Options & {
      readonly headersTimeout: number
      readonly authorization: Redacted.Redacted<string> | undefined
      readonly tunnels: Set<Duplex>
    }
  ) {
    super(origin, options)
    this.answerTimeout = options.headersTimeout
    this.authorization = authorization
    this.tunnels = tunnels
  }

  override connect(options: Undici.Dispatcher.ConnectOptions): Promise<Undici.Dispatcher.ConnectData> {
    const authorized =
      this.authorization === undefined
        ? options
        : { ...options, headers: withHeader(options.headers, PROXY_AUTHORIZATION, Redacted.value(this.authorization)) }
    // An attempt's (see `cancellable`): undici's CONNECT honours it until the proxy answers.
    const signal = options.signal instanceof AbortSignal ? options.signal : undefined
    return super.connect(authorized).then(
      (data) => {
        // Any 2xx opens the tunnel (RFC 9110 §9.3.6, as curl takes it); undici's ProxyAgent, which
        // reads this, takes only 200.
        if (data.statusCode >= 200 && data.statusCode < 300) {
          const socket = data.socket
          // Given up as the proxy answered: the TLS handshake with the origin is not started.
          if (signal?.aborted === true) {
            socket.destroy()
            throw markHop(signal.reason, "tunnel")
          }
          // Given up during the TLS handshake with the origin inside: ending the tunnel fails it.
          if (signal !== undefined) endOnAbort(signal, socket)
          this.tunnels.add(socket)
          socket.once("close", () => this.tunnels.delete(socket))
          return data.statusCode === 200 ? data : { ...data, statusCode: 200 }
        }
        data.socket.on("error", () => {}).destroy()
        // Kept so that the retry policy waits (or gives up) as it would for a response.
        const retryAfter = data.headers["retry-after"]
        throw new TunnelRefusedError(data.statusCode, Array.isArray(retryAfter) ? retryAfter[0] : retryAfter)
      },
      (error: unknown) => {
        const timedOut = (error as { readonly code?: unknown } | null)?.code === "UND_ERR_HEADERS_TIMEOUT"
        throw markHop(
          timedOut ? new Error(`the proxy did not answer within ${this.answerTimeout} ms`, { cause: error }) : error,
          "tunnel"
        )
      }
    )
  }
}

// SOCKS5 routes use an Agent like the others, so every pool option applies (undici's
// Socks5ProxyAgent builds its per-origin pools itself from `connections` and `pipelining`
// only: no keepAliveTimeout, no other Pool option). The agent is kept for its handshake,
// `createSocks5Connection`: a public method that its type declarations leave out.
interface Socks5Handshake {
  readonly createSocks5Connection: (host: string, port: number) => Promise<Socket>
}

const socksAgent = (proxy: Proxy.ProxyUrl, agent: Undici.Agent.Options, settings: Settings): Undici.Dispatcher => {
  const connectTimeout = typeof agent.connectTimeout === "number" ? agent.connectTimeout : undefined
  const timeout = connectTimeout === undefined ? {} : { timeout: connectTimeout }
  const handshakes = new Set<Socket>()
  // The attempt whose handshake is being started: `createSocks5Connection` opens its connection to
  // the proxy at once, before it first awaits, and that connection becomes the tunnel.
  let starting: Attempt | undefined
  const socks = new Undici.Socks5ProxyAgent(`socks5://${proxy.hostname}:${proxy.port}`, {
    ...(connectTimeout === undefined ? {} : { connectTimeout }),
    connect: socksConnector(timeout, handshakes, (socket) => {
      if (starting !== undefined) endOnAbort(starting.signal, socket)
    }),
    ...(proxy.username === undefined ? {} : { username: proxy.username, password: password(proxy) })
  }) as unknown as Socks5Handshake
  // HTTP/2 is offered inside the tunnel as it is direct and through CONNECT (`http2: true`, the
  // agent's allowH2); without it, `http2: true` through SOCKS5 was HTTP/1.1, a connection per request
  // in flight. Its TLS handshakes with origins, inside tunnels, are ended with the agent too (see
  // `DirectAgent`).
  const opening = new Set<Socket>()
  const originTls = tracked(
    Undici.buildConnector({ ...settings.originTls, ...timeout, allowH2: agent.allowH2 === true }),
    opening
  )
  return new SocksAgent(handshakes, opening, {
    ...agent,
    // Cancellable (see `Attempt`): given up, the connection to the proxy is ended, which fails its
    // handshake (see `socksConnector`) or, once it is the tunnel, the TLS handshake inside.
    connect: (options, callback) => {
      const port = Number(options.port) || (Proxy.defaultPort(options.protocol) ?? 80)
      const attempt = new Attempt()
      starting = attempt
      const handshake = socks.createSocks5Connection(options.hostname, port)
      starting = undefined
      handshake.then(
        (socket) => {
          handshakes.delete(socket)
          // Given up as the handshake ended: its tunnel, already ended, is not used.
          if (attempt.signal.aborted) callback(attempt.signal.reason as Error, null)
          else if (options.protocol === "https:") originTls({ ...options, httpSocket: socket }, callback)
          else callback(null, socket)
        },
        (error: Error) => callback(markHop(error, "tunnel"), null)
      )
      return attempt
    }
  })
}

/**
 * An Agent whose destruction also ends the connections to the SOCKS proxy still in their
 * handshake, and the TLS handshakes with origins inside tunnels (`opening`): no pool owns them
 * yet, so they would outlive it (until the connect timeout, or for good without one).
 */
class SocksAgent extends Undici.Agent {
  readonly handshakes: Set<Socket>
  readonly opening: Set<Socket>
  constructor(handshakes: Set<Socket>, opening: Set<Socket>, options: Undici.Agent.Options) {
    super(options)
    this.handshakes = handshakes
    this.opening = opening
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    // Left in the set: each socket's 'close' (see `socksConnector`) takes it out and fails its
    // handshake, which clears undici's handshake timer. Cleared here, the handshake was never
    // failed, and its timer (not unref'd) kept the process alive for up to the connect timeout.
    for (const socket of this.handshakes) socket.destroy()
    endOpening(this.opening)
    return destroyAs(super.destroy.bind(this), a, b)
  }
}

// The connector to the SOCKS5 proxy itself. It also makes up for Socks5ProxyAgent ignoring
// the socket closing during the handshake (a proxy that dropped the connection, or closed it
// partway through a reply, left the request waiting for the connect timeout): a socket still in
// `handshakes` (its handshake has not succeeded, see `socksAgent`) that closes is a failure.
const socksConnector = (
  timeout: { readonly timeout?: number },
  handshakes: Set<Socket>,
  opened: (socket: Socket) => void
): Undici.buildConnector.connector => {
  const connect = toProxy(Undici.buildConnector(timeout))
  return (options, callback) => {
    const socket: unknown = connect(
      {
        ...options,
        // Socks5ProxyAgent passes the URL's hostname, brackets included for IPv6.
        hostname: unbracket(options.hostname),
        ...(options.host === undefined ? {} : { host: unbracket(options.host) })
      },
      (error, socket) => {
        if (socket instanceof Socket) handshakes.add(socket)
        socket?.once("close", () => {
          const during = handshakes.delete(socket as Socket)
          if (during && socket.listenerCount("error") > 0) {
            socket.emit("error", new Error("the proxy closed the connection during the handshake"))
          }
        })
        if (error === null) callback(null, socket as NonNullable<typeof socket>)
        else callback(error, null)
      }
    )
    if (socket instanceof Socket) opened(socket)
    return socket
  }
}

// The target as proxy errors name it: the origin's host and port.
const targetOf = (origin: string): string => URL.parse(origin)?.host ?? origin

const unbracket = (host: string): string => host.replace(/^\[(.*)\]$/, "$1")

const password = (proxy: Proxy.ProxyUrl): string => (proxy.password === undefined ? "" : Redacted.value(proxy.password))

// SOCKS5 username/password authentication (RFC 1929) carries a user name and a password of 1 to
// 255 bytes each: `socks5://:pw@host` and `socks5://token@host` would be sent with no
// authentication at all (undici offers none without both), longer ones fail the handshake.
const socksCredentialProblem = (proxy: Proxy.ProxyUrl): string | undefined => {
  if (proxy.username === undefined && proxy.password === undefined) return undefined
  if (proxy.username === undefined || proxy.password === undefined) {
    return `SOCKS5 username/password authentication needs a user name and a password, the proxy URL has only ${proxy.username === undefined ? "a password" : "a user name"}`
  }
  if (Buffer.byteLength(proxy.username) > 255 || Buffer.byteLength(password(proxy)) > 255) {
    return "SOCKS5 username/password authentication (RFC 1929) allows at most 255 bytes each for the user name and the password"
  }
  return undefined
}

type Headers = NonNullable<Undici.Dispatcher.DispatchOptions["headers"]>

/** Whether `headers` have `name` (lower case), in any case. */
const hasHeader = (headers: Undici.Dispatcher.DispatchOptions["headers"], name: string): boolean => {
  if (headers === undefined || headers === null) return false
  const isName = (key: unknown) => String(key).toLowerCase() === name
  if (Array.isArray(headers)) return headers.some((v, i) => i % 2 === 0 && isName(v))
  if (Symbol.iterator in headers) {
    for (const [key] of headers as Iterable<[string, unknown]>) if (isName(key)) return true
    return false
  }
  return Object.keys(headers).some(isName)
}

export const withHost = (headers: Undici.Dispatcher.DispatchOptions["headers"], host: string): Headers =>
  withHeader(headers, "host", host)

/** `headers` with `name` (lower case) set to `value`, unless they have it already (in any case). */
export const withHeader = (
  headers: Undici.Dispatcher.DispatchOptions["headers"] | Undici.Dispatcher.ConnectOptions["headers"],
  name: string,
  value: string
): Headers => {
  if (headers === undefined || headers === null) return { [name]: value }
  const isName = (key: unknown) => String(key).toLowerCase() === name
  if (Array.isArray(headers))
    return headers.some((v, i) => i % 2 === 0 && isName(v)) ? headers : [...headers, name, value]
  if (Symbol.iterator in headers) {
    // undici reads an array as flat name/value pairs, so the entries are flattened.
    const flat: Array<string> = []
    for (const [key, values] of headers as Iterable<[string, string | Array<string> | undefined]>) {
      for (const one of values === undefined ? [] : Array.isArray(values) ? values : [values]) flat.push(key, one)
    }
    return withHeader(flat, name, value)
  }
  return Object.keys(headers).some(isName) ? headers : { ...headers, [name]: value }
}

// Forwards every handler call, replacing the error passed to onResponseError/onError by a
// typed proxy error when it is one. A JS Proxy keeps whatever handler style undici uses.
const withProxyErrors = (
  handler: Undici.Dispatcher.DispatchHandler,
  proxy: Proxy.ProxyUrl,
  origin: string
): Undici.Dispatcher.DispatchHandler => {
  const target = targetOf(origin)
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
