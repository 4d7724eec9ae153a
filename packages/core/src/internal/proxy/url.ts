// Proxy URL parsing. Kept apart from Proxy.ts so the public module reads as a contract.
import * as Redacted from "effect/Redacted"
import { DEFAULT_PORTS } from "../url.ts"

export type Protocol = "http" | "https" | "socks5" | "socks5h"

export interface Parsed {
  readonly protocol: Protocol
  readonly hostname: string
  readonly port: number
  readonly username: string | undefined
  readonly password: Redacted.Redacted<string> | undefined
}

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i

/** Whether `digits` is a port number: 1 to 65535 (leading zeros allowed, as URLs allow them). */
const isPort = (digits: string): boolean => /^\d+$/.test(digits) && Number(digits) >= 1 && Number(digits) <= 65535

/**
 * Masks what might be a password in a raw input that did not parse (where we cannot tell the
 * parts apart): the whole user info, or, without one, anything after a colon that is not a
 * port. `http://alice:s3cret` and `http://alice:123456` (no port has six digits) are a user
 * and a password typed without the host: they show as `http://alice:<redacted>`. After a
 * bracketed IPv6 host, which no user name can be, digits are a port, whatever their value.
 */
export const redactInput = (input: string): string => {
  const scheme = SCHEME.exec(input)?.[0] ?? ""
  const rest = input.slice(scheme.length)
  const at = rest.lastIndexOf("@")
  if (at >= 0) return `${scheme}<redacted>@${rest.slice(at + 1)}`
  const parts = /^(\[[^\]]*\]|[^:[\]]*)(?::(\d*))?([/?#].*)?$/.exec(rest)
  const [, host = "", port = ""] = parts ?? []
  if (parts !== null && (port === "" || host.startsWith("[") || isPort(port))) return input
  const head = /^(\[[^\]]*\]|[^:[\]]*):/.exec(rest)?.[1]
  return head === undefined ? `${scheme}<redacted>` : `${scheme}${head}:<redacted>`
}

/** The URL as people read it, with the password (or a lone user name, often a token) replaced by `<redacted>`. */
export const label = (proxy: Parsed): string => {
  // A lone user name is often a token (`https://<token>@proxy`): hidden like a password.
  const user =
    proxy.password !== undefined
      ? `${encodeURIComponent(proxy.username ?? "")}:<redacted>@`
      : proxy.username !== undefined
        ? "<redacted>@"
        : ""
  return `${proxy.protocol}://${user}${proxy.hostname}:${proxy.port}`
}

const decode = (part: string): string | undefined => {
  try {
    return decodeURIComponent(part)
  } catch {
    return undefined
  }
}

/** Parses a proxy URL; a string result is the reason it was rejected (never containing the input). */
export const parse = (raw: string): Parsed | string => {
  const input = raw.trim()
  if (input === "") return "the URL is empty"
  const scheme = SCHEME.exec(input)?.[1]?.toLowerCase()
  // Like curl, a bare `host:port` means an HTTP proxy; without a port there is nothing to go on.
  if (scheme === undefined && !/:\d+\/?$/.test(input)) {
    return "missing scheme and port (expected e.g. http://proxy.example:3128)"
  }
  const protocol = scheme ?? "http"
  if (protocol !== "http" && protocol !== "https" && protocol !== "socks5" && protocol !== "socks5h") {
    return `unsupported scheme "${protocol}" (expected http, https, socks5 or socks5h)`
  }
  // The authority's port, wherever the authority ends (`/`, `?`, `#` or the end of the input).
  const authority = /^(?:[a-z][a-z0-9+.-]*:\/\/)?([^/?#]*@)?(\[[^\]]*\]|[^:/?#]*):(\d+)(?=[/?#]|$)/i.exec(input)
  const explicit = authority?.[3]
  if (authority !== null && explicit !== undefined && !isPort(explicit)) {
    // Without user info, `alice:123456` may be a user and a password typed without "@host": the
    // digits are not echoed (see redactInput).
    const ambiguous = authority[1] === undefined && !(authority[2] ?? "").startsWith("[")
    return ambiguous
      ? `port must be an integer from 1 to 65535 (the digits after ":" are not shown: with no "@host" after them, they may be a password)`
      : `port must be an integer from 1 to 65535, got ${explicit}`
  }
  let url: URL
  try {
    // Parsed as http(s) so the host (brackets, case, IDN) and port get the special-scheme rules.
    const special = protocol === "https" ? "https" : "http"
    url = new URL(scheme === undefined ? `${special}://${input}` : input.replace(SCHEME, `${special}://`))
  } catch {
    return "not a valid URL"
  }
  if (url.hostname === "") return "missing host"
  if ((url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.hash !== "") {
    return "a proxy URL has no path, query or fragment"
  }
  const username = url.username === "" ? undefined : decode(url.username)
  const password = url.password === "" ? undefined : decode(url.password)
  if ((url.username !== "" && username === undefined) || (url.password !== "" && password === undefined)) {
    return "malformed percent-encoding in the user info"
  }
  // new URL drops the port when it equals the scheme's default; an explicit one must survive.
  const port =
    url.port !== "" ? Number(url.port) : explicit !== undefined ? Number(explicit) : DEFAULT_PORTS[`${protocol}:`]
  return {
    protocol,
    hostname: url.hostname,
    port,
    username,
    password: password === undefined ? undefined : Redacted.make(password)
  }
}
