// Where a request goes, in the parts undici's `dispatch` takes. Parsing a URL (`new URL` and
// reading its origin, path and query back) was the largest single cost of a small request's
// own JavaScript; most URLs a program sends are already written as the parser would write
// them, and for those the parts are slices of the text.

/** A request's destination: `origin` and `path` (with query) as undici takes them. */
export class Target {
  readonly origin: string
  readonly path: string
  /** The URL without its fragment, as a response reports it. */
  readonly href: string
  readonly https: boolean
  constructor(origin: string, path: string, href: string, https: boolean) {
    this.origin = origin
    this.path = path
    this.href = href
    this.https = https
  }
}

/** A parsed URL's target; `undefined` when its scheme is not `http:` or `https:`. */
export const fromUrl = (url: URL): Target | undefined => {
  const protocol = url.protocol
  if (protocol !== "http:" && protocol !== "https:") return undefined
  const hash = url.hash
  const href = url.href
  return new Target(
    url.origin,
    url.pathname + url.search,
    hash === "" ? href : href.slice(0, -hash.length),
    protocol === "https:"
  )
}

/**
 * The target of an `http(s)` URL already written exactly as the WHATWG URL parser writes it
 * (so `new URL(url).href === url`), read from its text; `undefined` for any other URL, which
 * must be parsed. Accepted: a lower-case scheme and host of ASCII letters, digits and `-` in
 * non-empty labels (a dotted-decimal address if the last label starts with a digit; no `xn--`
 * label, which the parser would check), a port without leading zeros other than the scheme's
 * default, a path and an optional non-empty query of characters the parser keeps as they are,
 * no `.`/`..` segment (nor `%2e` anywhere), no user info and no fragment. Anything else
 * (upper case, `\`, spaces, non-ASCII, IPv6, an empty path...) goes to the parser.
 */
export const canonical = (url: string): Target | undefined => {
  const https = url.startsWith("https://")
  if (!https && !url.startsWith("http://")) return undefined
  const n = url.length
  const hostStart = https ? 8 : 7
  let i = hostStart
  let label = i
  for (; i < n; i++) {
    const c = url.charCodeAt(i)
    if (c === 46 /* . */) {
      if (i === label) return undefined
      label = i + 1
    } else if (c >= 128 || (KEEP[c]! & HOST) === 0) break
  }
  const hostEnd = i
  if (hostEnd === label) return undefined
  const first = url.charCodeAt(label)
  if (first >= 48 && first <= 57 ? !isDottedQuad(url, hostStart, hostEnd) : hasPunycode(url, hostStart, hostEnd)) {
    return undefined
  }
  if (i < n && url.charCodeAt(i) === 58 /* : */) {
    const start = ++i
    let port = 0
    for (; i < n && i - start < 6; i++) {
      const c = url.charCodeAt(i)
      if (c < 48 || c > 57) break
      port = port * 10 + c - 48
    }
    if (i === start || url.charCodeAt(start) === 48 || port > 65535 || port === (https ? 443 : 80)) return undefined
  }
  const pathStart = i
  if (url.charCodeAt(i) !== 47 /* / */) return undefined
  for (; i < n; i++) {
    const c = url.charCodeAt(i)
    if (c >= 128 || (KEEP[c]! & PATH) === 0) break
    if (c === 46 && url.charCodeAt(i - 1) === 47 && isDotSegment(url, i)) return undefined
    if (c === 37 /* % */ && url.charCodeAt(i + 1) === 50 && (url.charCodeAt(i + 2) | 0x20) === 101) return undefined
  }
  if (i < n) {
    // An empty query is written (`/a?`) but not sent (`search` is ""): parse it.
    if (url.charCodeAt(i) !== 63 /* ? */ || i === n - 1) return undefined
    for (i++; i < n; i++) {
      const c = url.charCodeAt(i)
      if (c >= 128 || (KEEP[c]! & QUERY) === 0) return undefined
    }
  }
  return new Target(url.slice(0, pathStart), url.slice(pathStart), url, https)
}

// Which ASCII characters the parser keeps as they are: in a host (lower-case letters, digits,
// `-`; `.` is read apart), in a path, in a query of a special scheme (which encodes `'`). `%` is
// kept as it is, valid escape or not; `\` is a path separator in http(s) URLs, `#` starts the
// fragment, and everything else left out is encoded, dropped or changes the URL's shape.
const HOST = 1
const PATH = 2
const QUERY = 4
const KEEP = new Uint8Array(128)
const keep = (chars: string, where: number) => {
  for (let i = 0; i < chars.length; i++) KEEP[chars.charCodeAt(i)]! |= where
}
keep("abcdefghijklmnopqrstuvwxyz0123456789-", HOST)
keep("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%", PATH)
keep("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&()*+,;=:@/?%", QUERY)

// Whether the `.` at `i`, just after a `/`, starts a `.` or `..` segment (the parser removes it).
const isDotSegment = (url: string, i: number): boolean => {
  let c = url.charCodeAt(i + 1)
  if (c === 46) c = url.charCodeAt(i + 2)
  return Number.isNaN(c) /* the end */ || c === 47 || c === 63
}

// `a.b.c.d`, each 0-255 in decimal without leading zeros: the one way the parser writes IPv4.
const isDottedQuad = (url: string, start: number, end: number): boolean => {
  let parts = 0
  let i = start
  while (true) {
    const from = i
    let value = 0
    for (; i < end; i++) {
      const c = url.charCodeAt(i)
      if (c === 46) break
      if (c < 48 || c > 57) return false
      value = value * 10 + c - 48
    }
    const digits = i - from
    if (digits === 0 || digits > 3 || value > 255 || (digits > 1 && url.charCodeAt(from) === 48)) return false
    parts++
    if (i === end) return parts === 4
    i++
  }
}

// An `xn--` label, which the parser decodes to check it (and refuses when it is not valid).
const hasPunycode = (url: string, start: number, end: number): boolean => {
  const at = url.indexOf("xn--", start)
  return at >= 0 && at < end
}
