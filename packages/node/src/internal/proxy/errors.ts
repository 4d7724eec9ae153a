// Turns undici's proxy failures into volley's typed proxy errors. In a proxied route every
// local connect and DNS lookup is for the proxy (the proxy reaches the origin), so a connect
// failure names the proxy; TLS and protocol errors after the tunnel is up stay untouched.
import { Proxy } from "@volley/core"

/** Code of the error our SOCKS5 connector raises when the proxy hangs up mid-handshake. */
export const SOCKS_CLOSED = "VOLLEY_SOCKS5_CLOSED"

const CONNECT_ANSWER = /^Proxy response \((\d+)\) !== 200 when HTTP Tunneling$/

interface UndiciLike {
  readonly code?: unknown
  readonly syscall?: unknown
  readonly message?: unknown
}

const connectCodes = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT"
])

export const toProxyError = (cause: unknown, proxy: Proxy.ProxyUrl, target: string): unknown => {
  if (typeof cause !== "object" || cause === null || Proxy.isProxyError(cause)) return cause
  const { code, syscall, message } = cause as UndiciLike
  const text = typeof message === "string" ? message : String(cause)
  const fields = { proxy: proxy.label, target }
  let error: Proxy.ProxyError | undefined
  const status = CONNECT_ANSWER.exec(text)?.[1]
  if (status !== undefined) {
    // tinyproxy answers a wrong password with 401 instead of 407; on CONNECT only the proxy can answer.
    error =
      status === "407" || status === "401"
        ? new Proxy.ProxyAuthenticationError({ ...fields, reason: `the proxy answered CONNECT with ${status}` })
        : new Proxy.ProxyConnectionError({
            ...fields,
            status: Number(status),
            reason: `the proxy refused the CONNECT tunnel with status ${status}`
          })
  } else if (text === "Proxy Authentication Required (407)") {
    error = new Proxy.ProxyAuthenticationError({ ...fields, reason: "the proxy answered 407" })
  } else if (code === "UND_ERR_SOCKS5_AUTH_FAILED" || code === "UND_ERR_SOCKS5_AUTH_REJECTED") {
    error = new Proxy.ProxyAuthenticationError({ ...fields, reason: `SOCKS5: ${text}` })
  } else if (code === SOCKS_CLOSED) {
    error = new Proxy.ProxyConnectionError({ ...fields, reason: text })
  } else if (typeof code === "string" && code.startsWith("UND_ERR_SOCKS5")) {
    error = new Proxy.ProxyConnectionError({ ...fields, reason: `SOCKS5: ${text}` })
  } else if (code === "UND_ERR_PRX_CONN") {
    error = new Proxy.ProxyConnectionError({ ...fields, reason: "the proxy closed the connection during CONNECT" })
  } else if (code === "UND_ERR_PRX_TLS") {
    error = new Proxy.ProxyConnectionError({ ...fields, reason: `TLS to the proxy failed: ${text}` })
  } else if (syscall === "connect" || (typeof code === "string" && connectCodes.has(code))) {
    error = new Proxy.ProxyConnectionError({ ...fields, reason: `cannot connect to the proxy: ${text}` })
  }
  if (error === undefined) return cause
  Object.defineProperty(error, "cause", { value: cause, enumerable: false, configurable: true, writable: true })
  return error
}
