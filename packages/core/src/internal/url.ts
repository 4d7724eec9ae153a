// URL facts shared by the fan-out scheduler, Resilience's per-origin keys and proxy routing:
// the one table of default ports, and a URL's origin key; and a URL as errors show it.
import * as UrlParams from "effect/http/UrlParams"

/**
 * A URL argument (`Http.*`, a batch's item) as the text of the request's URL. Given a URL
 * object, `HttpClientRequest.setUrl` splits its query into url params, sent written back
 * form-encoded (`%20` as `+`, `?flag` as `?flag=`, `/`, `~` and `;` escaped): another URL than
 * the one given (a signed URL's signature covers the query as written), where fetch sends its
 * `href`, as a string URL is sent.
 */
export const urlText = (url: string | URL): string => (typeof url === "string" ? url : url.href)

/** The port each scheme implies when a URL names none. */
export const DEFAULT_PORTS = { "http:": 80, "https:": 443, "socks5:": 1080, "socks5h:": 1080 } as const

/** The port `protocol` (`"https:"`, any case) implies, or `undefined` for a scheme not in the table. */
export const defaultPort = (protocol: string): number | undefined =>
  (DEFAULT_PORTS as Readonly<Record<string, number | undefined>>)[protocol.toLowerCase()]

/**
 * `scheme://host:port` of a URL, as the URL parser (and so undici) resolves it: lower case,
 * without user info or the scheme's default port, so every spelling of one origin shares its
 * limit (`:08080` and `:8080`; `127.0.0.%31`, `127.1` and `127.0.0.1`; `\` for `/`...).
 * Relative URLs share "".
 *
 * On the hot path of every batch with `perHost`: an `http(s)` URL whose authority is written
 * as the parser writes it (ASCII letters, digits, `-` and `.`, no IPv4 shorthand, a port
 * without leading zeros) is keyed from its text, without parsing; any other is parsed. A URL
 * that does not parse keeps a key from its text, and fails later as that item's
 * `InvalidUrlError`.
 */
export const originOf = (url: string): string => {
  const scheme = url.indexOf("://")
  // `http:x`, `http:/x` and `http:\\x` name the host `x` too.
  if (scheme < 0) return isHttpColon(url) ? (parsedOrigin(url) ?? "") : ""
  const http = isHttp(url, scheme)
  let start = scheme + 3
  let end = start
  let colon = -1
  // Whether the authority may be written as the parser writes it (only http(s) has an origin
  // to parse): the parser ends it at `\`, drops tabs and newlines, decodes `%`, compresses IPv6
  // addresses and maps non-ASCII hosts. Any character but those of a plain host (or user info
  // and port separators) sends the URL to the parser.
  let plain = http
  // Where the host's last label starts: one that starts with a digit makes an IPv4 address.
  let label = start
  while (end < url.length) {
    const c = url.charCodeAt(end)
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break
    if (c === 64 /* @ */) start = label = end + 1
    else if (c === 58 /* : */) colon = end
    else if (c === 46 /* . */) label = end + 1
    else if (c === 93 /* ] */) {
      colon = -1
      plain = false
    } else if (((c | 0x20) < 97 || (c | 0x20) > 122) && (c < 48 || c > 57) && c !== 45 /* - */) plain = false
    end++
  }
  const hostEnd = colon > start ? colon : end
  if (
    plain &&
    // A host and its last label not empty (the parser skips the slashes of `http:///x`, drops
    // a trailing dot from an IPv4 address); a last label that starts with a digit only in a
    // dotted-decimal address (`127.1`, `2130706433`, `0x7f.1` and `010.0.0.1` are IPv4 too).
    label < hostEnd &&
    (url.charCodeAt(label) > 57 || url.charCodeAt(label) < 48 || isDottedQuad(url, start, hostEnd)) &&
    (hostEnd === end || isPlainPort(url, hostEnd + 1, end))
  ) {
    return textKey(url, scheme, start, hostEnd, end)
  }
  // Another scheme is keyed as written (the parser gives most no origin), unless the parser
  // would clean the scheme up first (` http://`, `ht\ttp://`).
  if (!http && isScheme(url, scheme)) return textKey(url, scheme, start, hostEnd, end)
  return parsedOrigin(url) ?? textKey(url, scheme, start, hostEnd, end)
}

// The key of a URL as written: `scheme://` + host (+ `:port` unless the default), lower case.
const textKey = (url: string, scheme: number, start: number, hostEnd: number, end: number): string => {
  const prefix = url.slice(0, scheme + 3)
  const port = hostEnd < end ? url.slice(hostEnd + 1, end) : ""
  const host = url.slice(start, hostEnd)
  const key =
    port === "" || Number(port) === defaultPort(url.slice(0, scheme + 1)) ? prefix + host : `${prefix}${host}:${port}`
  return key.toLowerCase()
}

const parsedOrigin = (url: string): string | undefined => {
  const origin = URL.parse(url)?.origin
  return origin === "null" ? undefined : origin
}

// Whether `url` starts with `http` or `https` (any case) ending at `end` (`c | 0x20` is `c` in
// lower case for letters; no other character maps to these).
const isHttp = (url: string, end: number): boolean =>
  (end === 4 || (end === 5 && (url.charCodeAt(4) | 0x20) === 115)) /* s */ &&
  (url.charCodeAt(0) | 0x20) === 104 /* h */ &&
  (url.charCodeAt(1) | 0x20) === 116 /* t */ &&
  (url.charCodeAt(2) | 0x20) === 116 /* t */ &&
  (url.charCodeAt(3) | 0x20) === 112 /* p */

const isHttpColon = (url: string): boolean =>
  (url.charCodeAt(4) === 58 /* : */ && isHttp(url, 4)) || (url.charCodeAt(5) === 58 /* : */ && isHttp(url, 5))

// Whether `url` up to `end` is a scheme as the parser reads one: a letter, then letters,
// digits, `+`, `-` or `.`.
const isScheme = (url: string, end: number): boolean => {
  for (let i = 0; i < end; i++) {
    const c = url.charCodeAt(i)
    if ((c | 0x20) >= 97 && (c | 0x20) <= 122) continue
    // `+`, `-` and `.`
    if (i === 0 || !((c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46)) return false
  }
  return end > 0
}

// Four decimal parts of 0-255 without leading zeros (one would be octal).
const isDottedQuad = (url: string, from: number, to: number): boolean => {
  let dots = 0
  let part = from
  for (let i = from; i < to; i++) {
    if (url.charCodeAt(i) !== 46 /* . */) continue
    if (!isByte(url, part, i)) return false
    dots++
    part = i + 1
  }
  return dots === 3 && isByte(url, part, to)
}

// 0-255 in decimal, without a leading zero.
const isByte = (url: string, from: number, to: number): boolean => {
  const length = to - from
  if (length === 0 || length > 3 || (length > 1 && url.charCodeAt(from) === 48)) return false
  let value = 0
  for (let i = from; i < to; i++) {
    const c = url.charCodeAt(i)
    if (c < 48 || c > 57) return false
    value = value * 10 + c - 48
  }
  return value <= 255
}

// Digits without a leading zero (`:08080` is `:8080`), or none (`http://a:/` is `http://a/`).
const isPlainPort = (url: string, from: number, to: number): boolean => {
  if (to - from > 1 && url.charCodeAt(from) === 48) return false
  for (let i = from; i < to; i++) {
    const c = url.charCodeAt(i)
    if (c < 48 || c > 57) return false
  }
  return true
}

/**
 * A URL as volley's errors, logs and spans show it: Effect's `UrlParams.redactUrl` (user info,
 * the query parameters `names` lists, by default the fiber's `UrlParams.CurrentRedactedNames`),
 * and, in a URL that does not parse, a password holding a `/`, `?`, `#` or `\`
 * (`http://user:pa/ss@host/`). The URL parser, and so Effect, ends the authority at that
 * character: the URL fails on its port (`pa`), and the password showed as given.
 */
export const redactUrl = (url: string, names?: ReadonlyArray<string | RegExp>): string =>
  UrlParams.redactUrl(url.includes("@") && !URL.canParse(url) ? redactUnparsedUserinfo(url) : url, names)

// A URL that does not parse: after `scheme:` and its slashes (or the leading slashes of a URL
// without one), a user name and a colon not followed by a port (digits up to a `/`, `?`, `#`, `\`
// or the end) but by a password running to an `@`. Where that password ends cannot be told, so
// everything up to the last `@` is replaced (at worst more than the user info, never less). Tabs,
// newlines and leading controls, which the parser drops, are dropped first, as Effect does.
const UNPARSED_USERINFO = /^((?:[a-z][a-z\d+.-]*:[/\\]*|[/\\]{2,}))[^/\\?#@:]*:(?!\d*(?:[/\\?#]|$)).*@/is

const redactUnparsedUserinfo = (url: string): string => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the parser drops leading C0 controls and spaces
  const normalized = url.replace(/[\t\n\r]/g, "").replace(/^[\x00-\x20]+/, "")
  const match = UNPARSED_USERINFO.exec(normalized)
  return match === null ? url : `${match[1]}REDACTED:REDACTED@${normalized.slice(match[0].length)}`
}
