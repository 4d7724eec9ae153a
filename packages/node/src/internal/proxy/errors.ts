// Turns undici's proxy failures into volley's typed proxy errors. Failures on the way to the
// proxy (TCP, TLS to an https:// proxy, the CONNECT exchange, the SOCKS5 handshake) are marked
// where they happen, in the connectors of dispatcher.ts: the same codes also come from the origin
// through the tunnel (an untrusted origin certificate must stay the origin's TransportError), so
// codes alone cannot tell the two apart.
import * as Proxy from "@volley/core/Proxy"

/** Where on the way to the proxy a failure happened. */
export type Hop = "connect" | "tls" | "tunnel"

const HOP = Symbol("volley/proxy/hop")

type Marked = { readonly [HOP]?: Hop; readonly cause?: unknown }

/** Marks `error` as a failure on the way to the proxy; the first (innermost) mark wins. */
export const markHop = <E>(error: E, hop: Hop): E => {
  if (typeof error === "object" && error !== null && !(HOP in error)) {
    Object.defineProperty(error, HOP, { value: hop })
  }
  return error
}

/** The proxy answered `CONNECT` with another status than 200 (and this `Retry-After`, if any). */
export class TunnelRefusedError extends Error {
  readonly status: number
  readonly retryAfter: string | undefined
  constructor(status: number, retryAfter: string | undefined) {
    super(`the proxy answered CONNECT with ${status}`)
    this.status = status
    this.retryAfter = retryAfter
  }
}

// undici's ProxyAgent reports a 407 to a forwarded plain-HTTP request with this message alone
// (an InvalidArgumentError: no status, no dedicated code). Pinned by a test.
const FORWARDED_407 = "Proxy Authentication Required (407)"

const SOCKS_AUTH = new Set(["UND_ERR_SOCKS5_AUTH_FAILED", "UND_ERR_SOCKS5_AUTH_REJECTED"])

export const toProxyError = (cause: unknown, proxy: Proxy.ProxyUrl, target: string): unknown => {
  if (typeof cause !== "object" || cause === null || Proxy.isProxyError(cause)) return cause
  const error = classify(cause, { proxy: proxy.label, target }, proxy.protocol)
  if (error === undefined) return cause
  Object.defineProperty(error, "cause", { value: cause, enumerable: false, configurable: true, writable: true })
  return error
}

const classify = (
  cause: object,
  fields: { readonly proxy: string; readonly target: string },
  protocol: Proxy.ProxyUrl["protocol"]
): Proxy.ProxyError | undefined => {
  if (cause instanceof TunnelRefusedError) {
    // tinyproxy answers a wrong password with 401 instead of 407; on CONNECT only the proxy can answer.
    return cause.status === 407 || cause.status === 401
      ? new Proxy.ProxyAuthenticationError({ ...fields, reason: cause.message })
      : new Proxy.ProxyConnectionError({
          ...fields,
          status: cause.status,
          reason: `the proxy refused the CONNECT tunnel with status ${cause.status}`,
          ...(cause.retryAfter === undefined ? {} : { retryAfter: cause.retryAfter })
        })
  }
  if (messageOf(cause) === FORWARDED_407) {
    return new Proxy.ProxyAuthenticationError({ ...fields, reason: "the proxy answered 407" })
  }
  // undici wraps some of them once more (SecureProxyConnectionError, ProxyConnectionError).
  const marked = [cause, (cause as Marked).cause].find(
    (error): error is Marked & object => typeof error === "object" && error !== null && HOP in error
  )
  const hop = marked?.[HOP]
  if (marked === undefined || hop === undefined) return undefined
  const text = messageOf(marked)
  const code = (marked as { readonly code?: unknown }).code
  if (typeof code === "string" && SOCKS_AUTH.has(code)) {
    return new Proxy.ProxyAuthenticationError({ ...fields, reason: `SOCKS5: ${text}` })
  }
  const reason =
    hop === "connect"
      ? `cannot connect to the proxy: ${text}`
      : hop === "tls"
        ? `TLS to the proxy failed: ${text}`
        : protocol === "socks5" || protocol === "socks5h"
          ? `SOCKS5: ${text}`
          : `CONNECT failed: ${text}`
  return new Proxy.ProxyConnectionError({ ...fields, reason })
}

const messageOf = (error: object): string => {
  const message = (error as { readonly message?: unknown }).message
  return typeof message === "string" ? message : String(error)
}
