// URL facts shared by the fan-out scheduler, Resilience's per-origin keys and proxy routing:
// the one table of default ports, and a URL's origin key.

/** The port each scheme implies when a URL names none. */
export const DEFAULT_PORTS = { "http:": 80, "https:": 443, "socks5:": 1080, "socks5h:": 1080 } as const

/** The port `protocol` (`"https:"`, any case) implies, or `undefined` for a scheme not in the table. */
export const defaultPort = (protocol: string): number | undefined =>
  (DEFAULT_PORTS as Readonly<Record<string, number | undefined>>)[protocol.toLowerCase()]

/**
 * `scheme://host:port` of a URL, without parsing it (a malformed URL still gets a key and fails
 * later, as that item's `InvalidUrlError`): lower case, without user info or the scheme's
 * default port, so every spelling of one origin shares its limit. Relative URLs share "".
 */
export const originOf = (url: string): string => {
  const scheme = url.indexOf("://")
  if (scheme < 0) return ""
  let start = scheme + 3
  let end = start
  let colon = -1
  while (end < url.length) {
    const c = url.charCodeAt(end)
    if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */) break
    if (c === 64 /* @ */) start = end + 1
    else if (c === 58 /* : */) colon = end
    else if (c === 93 /* ] */) colon = -1
    end++
  }
  const prefix = url.slice(0, scheme + 3)
  const port = colon > start ? url.slice(colon + 1, end) : ""
  const host = url.slice(start, colon > start ? colon : end)
  const key =
    port === "" || Number(port) === defaultPort(url.slice(0, scheme + 1)) ? prefix + host : `${prefix}${host}:${port}`
  return key.toLowerCase()
}
