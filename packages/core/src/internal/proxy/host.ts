// Host names, IP literals and NO_PROXY-style patterns, without `node:net` (core stays
// platform-agnostic). IP literals are compared as bytes, so `::1`, `[::1]` and
// `0:0:0:0:0:0:0:1` are one host.

/** A host as routing sees it: a lower-case name, or the bytes of an IP literal. */
export type Host =
  | { readonly _tag: "Name"; readonly name: string }
  | { readonly _tag: "Ip"; readonly bytes: Uint8Array }

/** One parsed NO_PROXY entry or routing-rule pattern. */
export type Pattern =
  | { readonly _tag: "Any" }
  | { readonly _tag: "Domain"; readonly domain: string; readonly port: number | undefined }
  | { readonly _tag: "Cidr"; readonly bytes: Uint8Array; readonly prefix: number; readonly port: number | undefined }

const parseIPv4 = (input: string): Uint8Array | undefined => {
  const parts = input.split(".")
  if (parts.length !== 4) return undefined
  const bytes = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const part = parts[i] as string
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return undefined
    bytes[i] = Number(part)
  }
  return bytes
}

const parseIPv6 = (input: string): Uint8Array | undefined => {
  // A zone id (fe80::1%eth0) names a local interface; it never matches a pattern.
  if (input.includes("%") || !/^[0-9a-f:.]+$/i.test(input)) return undefined
  const halves = input.split("::")
  if (halves.length > 2) return undefined
  const groups = (half: string | undefined): Array<number> | undefined => {
    if (half === undefined || half === "") return []
    const out: Array<number> = []
    const parts = half.split(":")
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i] as string
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseIPv4(part)
        if (v4 === undefined) return undefined
        out.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number))
      } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
        out.push(Number.parseInt(part, 16))
      } else {
        return undefined
      }
    }
    return out
  }
  const head = groups(halves[0])
  const tail = groups(halves[1])
  if (head === undefined || tail === undefined) return undefined
  const missing = 8 - head.length - tail.length
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined
  const all = [...head, ...new Array<number>(halves.length === 1 ? 0 : missing).fill(0), ...tail]
  const bytes = new Uint8Array(16)
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8
    bytes[2 * i + 1] = group & 0xff
  })
  return bytes
}

/** Parses an IPv4 or IPv6 literal (brackets allowed around IPv6). */
export const parseIp = (input: string): Uint8Array | undefined => {
  const bare = input.startsWith("[") && input.endsWith("]") ? input.slice(1, -1) : input
  return bare.includes(":") ? parseIPv6(bare) : parseIPv4(bare)
}

const NAME = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/

/**
 * A host name in ASCII: an internationalised one (`bücher.example`) in punycode
 * (`xn--bcher-kva.example`), as a URL's host is; `undefined` when the WHATWG URL parser, which
 * does the IDNA mapping (core has no `node:url`), rejects it. ASCII names are returned as they are.
 */
export const toAscii = (name: string): string | undefined => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the ASCII range, control characters included
  if (/^[\x00-\x7f]*$/.test(name)) return name
  // What would end a URL's host (`bü/cher` is host `bü` and a path), or be decoded in it, is no name.
  if (/[\s/\\?#@:[\]%]/.test(name)) return undefined
  return URL.parse(`http://${name}/`)?.hostname
}

/**
 * Normalises a host as it appears in a URL: brackets, case and a trailing dot don't matter, and
 * an internationalised name is taken in punycode, as a URL gives it.
 */
export const parseHost = (input: string): Host => {
  const bytes = parseIp(input)
  if (bytes !== undefined) return { _tag: "Ip", bytes }
  const ascii = toAscii(input) ?? input
  const mapped = ascii === input ? undefined : parseIp(ascii)
  if (mapped !== undefined) return { _tag: "Ip", bytes: mapped }
  return { _tag: "Name", name: ascii.toLowerCase().replace(/\.$/, "") }
}

/** Whether a host name is syntactically valid (letters, digits, `-`, `_`, dots). */
export const isHostName = (name: string): boolean => name.length <= 253 && NAME.test(name)

const parsePort = (input: string): number | string => {
  if (!/^\d{1,5}$/.test(input) || Number(input) < 1 || Number(input) > 65535) {
    return `port must be an integer from 1 to 65535, got "${input}"`
  }
  return Number(input)
}

/**
 * Parses one entry: `*`, a host name (a leading `.` or `*.` is accepted and ignored), an IP
 * literal, a CIDR range, each with an optional `:port` (IPv6 needs brackets for a port).
 * Returns the reason as a string when the entry is not one of these.
 */
export const parsePattern = (raw: string): Pattern | string => {
  const entry = raw.trim()
  if (entry === "*") return { _tag: "Any" }
  let address = entry
  let portText: string | undefined
  if (entry.startsWith("[")) {
    const close = entry.indexOf("]")
    if (close < 0) return "missing ] after an IPv6 address"
    address = entry.slice(1, close)
    const rest = entry.slice(close + 1)
    if (rest.startsWith(":")) portText = rest.slice(1)
    else if (rest.startsWith("/")) address += rest
    else if (rest !== "") return `unexpected "${rest}" after "]"`
  } else if ((entry.match(/:/g)?.length ?? 0) === 1) {
    const colon = entry.indexOf(":")
    address = entry.slice(0, colon)
    portText = entry.slice(colon + 1)
  }
  let port: number | undefined
  if (portText !== undefined) {
    const parsed = parsePort(portText)
    if (typeof parsed === "string") return parsed
    port = parsed
  }
  const slash = address.indexOf("/")
  if (slash >= 0) {
    const bytes = parseIp(address.slice(0, slash))
    if (bytes === undefined) return "a CIDR range needs an IP address before the /"
    const prefixText = address.slice(slash + 1)
    const prefix = Number(prefixText)
    if (!/^\d{1,3}$/.test(prefixText) || prefix > bytes.length * 8) {
      return `CIDR prefix must be an integer from 0 to ${bytes.length * 8}, got "${prefixText}"`
    }
    return { _tag: "Cidr", bytes, prefix, port }
  }
  const bytes = parseIp(address)
  if (bytes !== undefined) return { _tag: "Cidr", bytes, prefix: bytes.length * 8, port }
  // An internationalised name is matched in punycode, the form a URL's host has.
  const ascii = toAscii(address.replace(/^\*?\./, ""))
  if (ascii === undefined) return "not a host name, IP address or CIDR range (the URL parser rejects it)"
  // IDNA can map to an address (full-width digits): then it is one.
  const mapped = parseIp(ascii)
  if (mapped !== undefined) return { _tag: "Cidr", bytes: mapped, prefix: mapped.length * 8, port }
  const domain = ascii.replace(/\.$/, "").toLowerCase()
  if (!isHostName(domain)) return "not a host name, IP address or CIDR range"
  return { _tag: "Domain", domain, port }
}

/**
 * Why a parsed entry can never match a URL's host, or `undefined` when it can. A name whose
 * last label is a number (`300.1.1.1`, `1.2.3`, `10.0x1`) is read by URL parsers as an IPv4
 * address: rejected when out of range, else rewritten (`http://1.2.3/` has host `1.2.0.3`),
 * so no URL host is ever that name. curl accepts such entries too; they deserve a warning.
 */
export const neverMatches = (pattern: Pattern): string | undefined => {
  if (pattern._tag !== "Domain") return undefined
  const last = pattern.domain.slice(pattern.domain.lastIndexOf(".") + 1)
  return /^(\d+|0x[0-9a-f]*)$/.test(last)
    ? "ends in a number, so URLs read such a host as an IPv4 address (or reject it) and no host name ever matches it"
    : undefined
}

const inRange = (bytes: Uint8Array, range: Uint8Array, prefix: number): boolean => {
  if (bytes.length !== range.length) return false
  const full = Math.floor(prefix / 8)
  for (let i = 0; i < full; i++) if (bytes[i] !== range[i]) return false
  const bits = prefix % 8
  if (bits === 0) return true
  const mask = (0xff << (8 - bits)) & 0xff
  return ((bytes[full] as number) & mask) === ((range[full] as number) & mask)
}

/** Whether `pattern` covers `host` on `port` (`undefined` port: only port-less patterns match). */
export const matches = (pattern: Pattern, host: Host, port: number | undefined): boolean => {
  switch (pattern._tag) {
    case "Any":
      return true
    case "Domain":
      return (
        host._tag === "Name" &&
        (pattern.port === undefined || pattern.port === port) &&
        (host.name === pattern.domain || host.name.endsWith(`.${pattern.domain}`))
      )
    case "Cidr":
      return (
        host._tag === "Ip" &&
        (pattern.port === undefined || pattern.port === port) &&
        covers(pattern.bytes, pattern.prefix, host.bytes)
      )
  }
}

/**
 * Whether the range covers the address. An IPv4 address and its IPv4-mapped IPv6 form
 * (`::ffff:127.0.0.1`, which a URL may carry) are one address: IPv4 entries and ranges cover the
 * mapped form, and a range inside `::ffff:0:0/96` (`::ffff:10.0.0.0/104`, `::ffff:10.0.0.1`)
 * covers the IPv4 addresses it maps. A wider IPv6 range (`::/0`) still covers no IPv4 address.
 */
const covers = (range: Uint8Array, prefix: number, bytes: Uint8Array): boolean => {
  if (bytes.length === range.length) return inRange(bytes, range, prefix)
  if (bytes.length === 16) return inRange(bytes, MAPPED_V4, 96) && inRange(bytes.subarray(12), range, prefix)
  return prefix >= 96 && inRange(range, MAPPED_V4, 96) && inRange(bytes, range.subarray(12), prefix - 96)
}

const MAPPED_V4 = parseIPv6("::ffff:0:0") as Uint8Array

const LOOPBACK_V4 = new Uint8Array([127, 0, 0, 0])
const LOOPBACK_V6 = parseIPv6("::1") as Uint8Array

const ANY_V4 = new Uint8Array([0, 0, 0, 0])
const ANY_V6 = new Uint8Array(16)

/**
 * `localhost`, `*.localhost`, 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6
 * (`::ffff:127.0.0.1`); and the unspecified addresses `0.0.0.0` and `::`, which a connection
 * reaches this machine through (the URL a server "listening on 0.0.0.0:3000" prints): a proxy
 * would reach its own.
 */
export const isLoopback = (host: Host): boolean => {
  if (host._tag === "Name") return host.name === "localhost" || host.name.endsWith(".localhost")
  // An IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`, `::ffff:0.0.0.0`) is that address.
  const v4 = inRange(host.bytes, MAPPED_V4, 96) ? host.bytes.subarray(12) : host.bytes
  return (
    inRange(v4, LOOPBACK_V4, 8) ||
    inRange(v4, ANY_V4, 32) ||
    inRange(host.bytes, LOOPBACK_V6, 128) ||
    inRange(host.bytes, ANY_V6, 128)
  )
}
