/**
 * Proxy configuration as data: which proxy (HTTP, HTTPS or SOCKS5) a request goes
 * through, read from options or from `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` /
 * `NO_PROXY`, with typed per-host routing rules.
 *
 * Everything here is pure and platform-agnostic; `NodeProxy` in `@volley/node` turns a
 * {@link ProxyConfig} into an `HttpClient` layer. Passwords are `Redacted` from the
 * moment they are parsed: errors and {@link ProxyUrl.label} show `<redacted>` instead.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Host from "./internal/proxy/host.ts"
import * as Url from "./internal/proxy/url.ts"
import { defaultPort as portOfScheme } from "./internal/url.ts"
import * as Validate from "./Options.ts"

// ---------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------

/**
 * A validated proxy URL. With `socks5h` the proxy resolves host names; with `socks5` they
 * are resolved locally and the proxy gets the address, as in curl.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const proxy: Proxy.ProxyUrl = Effect.runSync(Proxy.parseUrl("socks5h://127.0.0.1"))
 * proxy.port // 1080
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface ProxyUrl {
  readonly protocol: "http" | "https" | "socks5" | "socks5h"
  /** Lower case; IPv6 literals keep their brackets, as in a URL. */
  readonly hostname: string
  /** Explicit, or the scheme's default: 80 (http), 443 (https), 1080 (socks5, socks5h). */
  readonly port: number
  readonly username: string | undefined
  readonly password: Redacted.Redacted<string> | undefined
  /** The URL for messages and logs, e.g. `http://alice:<redacted>@proxy.example:3128`. */
  readonly label: string
}

/**
 * Where a request goes: straight to the origin, or through a proxy.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const config = Effect.runSync(Proxy.make({ all: "http://127.0.0.1:3128", noProxy: "internal.example" }))
 * const route: Proxy.Route = Proxy.route(config, "https://internal.example/") // { _tag: "Direct" }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export type Route = { readonly _tag: "Direct" } | { readonly _tag: "Proxy"; readonly proxy: ProxyUrl }

/**
 * A parsed `NO_PROXY` value (see {@link isBypassed} for the syntax).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const noProxy: Proxy.NoProxy = Effect.runSync(Proxy.parseNoProxy(".internal.example, 10.0.0.0/8"))
 * Proxy.isBypassed("10.1.2.3", 443, noProxy) // true
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface NoProxy {
  readonly source: string
  readonly patterns: ReadonlyArray<Host.Pattern>
}

/**
 * A routing rule: requests whose host matches `match` take `route`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const config = Effect.runSync(Proxy.make({ rules: [{ match: ".corp.example", via: "http://127.0.0.1:3128" }] }))
 * const rules: ReadonlyArray<Proxy.Rule> = config.rules // one rule, its route through the proxy
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Rule {
  readonly match: string
  readonly pattern: Host.Pattern
  readonly route: Route
}

/**
 * A complete proxy configuration, built by {@link make} or {@link fromEnv}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const config: Proxy.ProxyConfig = Effect.runSync(Proxy.make({ https: "http://127.0.0.1:3128" }))
 * config.http // undefined: plain http goes direct
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface ProxyConfig {
  /** Proxy for `http:` origins (falls back to `all`). */
  readonly http: ProxyUrl | undefined
  /** Proxy for `https:` origins (falls back to `all`). */
  readonly https: ProxyUrl | undefined
  readonly all: ProxyUrl | undefined
  readonly noProxy: NoProxy
  /** Checked first, in order; the first match decides. */
  readonly rules: ReadonlyArray<Rule>
  /** Whether loopback hosts (`localhost`, 127.0.0.0/8, ::1, and `0.0.0.0` / `::`) may be proxied at all. */
  readonly proxyLoopback: boolean
}

/**
 * Input for {@link make}: proxy URLs as strings (or `Redacted` strings when they carry a
 * password), a `NO_PROXY`-style list and routing rules. An option that is `undefined` or
 * `null` (as JavaScript or JSON may give it) is unset and takes its default; an empty URL
 * string is unset too.
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const options: Proxy.Options = {
 *   all: Redacted.make("http://alice:s3cret@127.0.0.1:3128"),
 *   noProxy: "localhost, .internal.example",
 *   rules: [{ match: "api.partner.example", via: "direct" }]
 * }
 * const config = Proxy.make(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Proxy for `http:` origins. @default all */
  readonly http?: string | Redacted.Redacted<string> | undefined
  /** Proxy for `https:` origins. @default all */
  readonly https?: string | Redacted.Redacted<string> | undefined
  /** Proxy for every scheme without one of its own. @default none (direct) */
  readonly all?: string | Redacted.Redacted<string> | undefined
  /** Hosts that bypass the proxies, as in `NO_PROXY`. @default "" */
  readonly noProxy?: string | undefined
  /**
   * Per-host routes checked before everything else: `match` is one `NO_PROXY` entry,
   * `via` is `"direct"` or a proxy URL.
   * @default []
   */
  readonly rules?:
    | ReadonlyArray<{ readonly match: string; readonly via: string | Redacted.Redacted<string> }>
    | undefined
  /**
   * Send loopback hosts through the proxy too. Off by default because a proxy elsewhere
   * cannot reach your machine's loopback; tests whose proxy runs locally turn it on.
   * @default false
   */
  readonly proxyLoopback?: boolean | undefined
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * A proxy URL was rejected. `input` has its user info replaced by `<redacted>`, and so has,
 * without user info, whatever follows a colon that is not a port: `http://alice:123456` (no
 * `@host`, and no port has six digits) shows as `http://alice:<redacted>`, its digits named by
 * neither `input` nor `reason`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const msg = Proxy.make({ all: "ftp://u:pw@host:21" }).pipe(
 *   Effect.catchTag("InvalidProxyUrlError", (e) => Effect.succeed(e.message))
 * )
 * // 'Invalid proxy URL in all ("ftp://<redacted>@host:21"): unsupported scheme "ftp" (expected http, https, socks5 or socks5h)'
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidProxyUrlError extends Schema.TaggedError<InvalidProxyUrlError>()("InvalidProxyUrlError", {
  source: Schema.String,
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Invalid proxy URL in ${this.source} ("${this.input}"): ${this.reason}`
  }
}

/**
 * An entry of a `NO_PROXY` list or a routing rule's `match` was not a host name, IP
 * literal or CIDR range.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * const bad = Proxy.parseNoProxy("example.com, 10.0.0.0/33") // fails: CIDR prefix must be an integer from 0 to 32
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidNoProxyError extends Schema.TaggedError<InvalidNoProxyError>()("InvalidNoProxyError", {
  source: Schema.String,
  entry: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Invalid entry "${this.entry}" in ${this.source}: ${this.reason}`
  }
}

/**
 * The proxy could not be reached, failed the TLS handshake (an `https://` proxy whose
 * certificate is not trusted), dropped the connection, or refused to open a tunnel
 * (`status` is the proxy's answer to `CONNECT` when there was one, `retryAfter` its
 * `Retry-After` header if it sent one). Never retried by the client itself; the retry policy
 * (`Http.*`, batches) retries it as a transport failure, or, when the proxy answered, as a
 * response with that status and `Retry-After` would be (a 503 is retried, a 403 is not; a
 * `Retry-After` past `maxRetryAfter` fails with `RetryAfterTooLong`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, Proxy } from "@volley/core"
 *
 * const program = Http.getText("https://example.com/").pipe(
 *   Proxy.unwrapErrors,
 *   Effect.catchTag("ProxyConnectionError", (e) => Effect.succeed(`proxy down: ${e.proxy}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ProxyConnectionError extends Schema.TaggedError<ProxyConnectionError>()("ProxyConnectionError", {
  proxy: Schema.String,
  target: Schema.String,
  reason: Schema.String,
  status: Schema.optional(Schema.Number),
  retryAfter: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return `Proxy ${this.proxy} failed to reach ${this.target}: ${this.reason}`
  }
}

/**
 * The proxy rejected the credentials, or wants some and got none (HTTP 407, tinyproxy's
 * 401 on `CONNECT`, or a SOCKS5 authentication failure). Never retried: the same credentials
 * would be refused again.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, Proxy } from "@volley/core"
 *
 * const program = Http.getText("https://example.com/").pipe(
 *   Proxy.unwrapErrors,
 *   Effect.catchTag("ProxyAuthenticationError", (e) => Effect.fail(`check the password for ${e.proxy}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ProxyAuthenticationError extends Schema.TaggedError<ProxyAuthenticationError>()(
  "ProxyAuthenticationError",
  {
    proxy: Schema.String,
    target: Schema.String,
    reason: Schema.String
  }
) {
  override get message(): string {
    return `Proxy ${this.proxy} refused authentication for ${this.target}: ${this.reason}`
  }
}

/**
 * Either proxy failure a request can meet.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, Proxy } from "@volley/core"
 *
 * const program = Http.getText("https://example.com/").pipe(
 *   Proxy.unwrapErrors,
 *   Effect.catchIf(Proxy.isProxyError, (e: Proxy.ProxyError) => Effect.succeed(`proxy failed: ${e._tag}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export type ProxyError = ProxyConnectionError | ProxyAuthenticationError

/**
 * Whether a value is a {@link ProxyError}.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * Proxy.isProxyError(new Error("x")) // false
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isProxyError = (u: unknown): u is ProxyError =>
  u instanceof ProxyConnectionError || u instanceof ProxyAuthenticationError

// ---------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------

/**
 * Parses and validates one proxy URL: scheme `http`, `https`, `socks5` or `socks5h`, a
 * host, an optional port (scheme default otherwise) and optional user info. A bare
 * `host:port` is taken as `http://host:port`, as curl does. `source` names where the
 * value came from in error messages.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const proxy = Effect.runSync(Proxy.parseUrl("http://alice:s3cret@127.0.0.1:3128"))
 * proxy.label // "http://alice:<redacted>@127.0.0.1:3128"
 * Redacted.value(proxy.password!) // "s3cret"
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseUrl = (
  input: string | Redacted.Redacted<string>,
  source = "proxy URL"
): Effect.Effect<ProxyUrl, InvalidProxyUrlError> => {
  const raw: unknown = Redacted.isRedacted(input) ? Redacted.value(input) : input
  // From JavaScript (or a cast) anything can come here: a number, `null`, an object.
  if (typeof raw !== "string") {
    return Effect.fail(
      new InvalidProxyUrlError({ source, input: shown(raw), reason: `must be a string URL, got ${kind(raw)}` })
    )
  }
  const parsed = Url.parse(raw)
  return typeof parsed === "string"
    ? Effect.fail(new InvalidProxyUrlError({ source, input: Url.redactInput(raw.trim()), reason: parsed }))
    : Effect.succeed({ ...parsed, label: Url.label(parsed) })
}

/**
 * Parses a `NO_PROXY` value, failing on the first entry that is not `*`, a host name, an
 * IP literal or a CIDR range (each optionally with `:port`). Empty entries are skipped. An
 * internationalised name is kept in punycode, as the WHATWG URL parser maps it.
 * Entries that parse but can never match a URL's host (names ending in a number, such as
 * `300.1.1.1` or `1.2.3`, which URLs read as IPv4 addresses) are kept, as curl keeps them,
 * and named in one warning log (`Effect.logWarning`) per call.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const noProxy = Effect.runSync(Proxy.parseNoProxy(".internal.example, 10.0.0.0/8, [::1]:8080"))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseNoProxy = (value: string, source = "NO_PROXY"): Effect.Effect<NoProxy, InvalidNoProxyError> => {
  if (typeof value !== "string") {
    return Effect.fail(
      new InvalidNoProxyError({
        source,
        entry: shown(value),
        reason: `must be a string of comma- or space-separated entries, got ${kind(value)}`
      })
    )
  }
  const patterns: Array<Host.Pattern> = []
  const useless: Array<string> = []
  for (const entry of splitEntries(value)) {
    const pattern = Host.parsePattern(entry)
    if (typeof pattern === "string") {
      return Effect.fail(new InvalidNoProxyError({ source, entry, reason: pattern }))
    }
    if (Host.neverMatches(pattern) !== undefined) useless.push(entry)
    patterns.push(pattern)
  }
  const noProxy: NoProxy = { source: value, patterns }
  return useless.length === 0 ? Effect.succeed(noProxy) : Effect.as(warnNeverMatches(source, useless), noProxy)
}

/**
 * Builds a {@link ProxyConfig} from options, validating every URL and pattern. `undefined`
 * and `null` options are unset (see {@link Options}). A value of the wrong type (from
 * JavaScript or a cast) fails, naming the option: options that are not an object (a proxy URL
 * given for them) with `Options.InvalidOptionsError`, a proxy URL (`all`, `http`, `https`,
 * `rules[i].via`) that is not a string or `Redacted` string with `InvalidProxyUrlError`, a
 * `noProxy` or `rules[i].match` that is not a string with `InvalidNoProxyError`, and
 * `rules` that is not an array of objects or `proxyLoopback` that is not a boolean with
 * `Options.InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * const config = Proxy.make({
 *   all: "http://proxy.corp.example:3128",
 *   noProxy: ".corp.example",
 *   rules: [{ match: "eu.example.com", via: "socks5h://eu-gw.example:1080" }]
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.fnUntraced(function* (given?: Options) {
  // A proxy URL given for the options (`make("http://proxy:3128")`) would otherwise route every
  // request direct without a word. `null` options are none, as `undefined` are.
  const options = yield* Validate.record("options", given ?? {})
  // `null` (from JavaScript or JSON) means unset, as `undefined` does.
  const optional = (input: string | Redacted.Redacted<string> | undefined, source: string) =>
    input === undefined || input === null || (typeof input === "string" && input.trim() === "")
      ? Effect.succeed(undefined)
      : parseUrl(input, source)
  const proxyLoopback = yield* Validate.oneOf("proxyLoopback", options.proxyLoopback ?? false, [true, false])
  const inputRules: unknown = options.rules ?? []
  if (!Array.isArray(inputRules)) {
    return yield* new Validate.InvalidOptionsError({
      option: "rules",
      reason: `must be an array of { match, via }, got ${kind(inputRules)}`
    })
  }
  const rules: Array<Rule> = []
  for (const [i, rule] of (inputRules as NonNullable<Options["rules"]>).entries()) {
    if (typeof rule !== "object" || rule === null) {
      return yield* new Validate.InvalidOptionsError({
        option: `rules[${i}]`,
        reason: `must be an object { match, via }, got ${kind(rule)}`
      })
    }
    if (typeof rule.match !== "string") {
      return yield* new InvalidNoProxyError({
        source: `rules[${i}].match`,
        entry: shown(rule.match),
        reason: `must be a string (one NO_PROXY entry), got ${kind(rule.match)}`
      })
    }
    const pattern = Host.parsePattern(rule.match)
    if (typeof pattern === "string") {
      return yield* new InvalidNoProxyError({ source: `rules[${i}].match`, entry: rule.match, reason: pattern })
    }
    if (Host.neverMatches(pattern) !== undefined) yield* warnNeverMatches(`rules[${i}].match`, [rule.match.trim()])
    const route: Route =
      rule.via === "direct" ? direct : { _tag: "Proxy", proxy: yield* parseUrl(rule.via, `rules[${i}].via`) }
    rules.push({ match: rule.match.trim(), pattern, route })
  }
  const config: ProxyConfig = {
    http: yield* optional(options.http, "http"),
    https: yield* optional(options.https, "https"),
    all: yield* optional(options.all, "all"),
    noProxy: yield* parseNoProxy(options.noProxy ?? "", "noProxy"),
    rules,
    proxyLoopback
  }
  return config
})

/**
 * A configuration that sends everything direct.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * Proxy.route(Proxy.none, "http://example.com/") // { _tag: "Direct" }
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: ProxyConfig = {
  http: undefined,
  https: undefined,
  all: undefined,
  noProxy: { source: "", patterns: [] },
  rules: [],
  proxyLoopback: false
}

/**
 * Reads the proxy environment through Effect `Config` (so a `ConfigProvider` can supply
 * it in tests): `http_proxy`, `https_proxy`, `all_proxy`, `no_proxy`, each also in upper
 * case; the lower-case form wins when both are set, as in curl. Empty values count as
 * unset. URLs are read as `Redacted`, so a password never leaves this function in clear.
 * `options` adds what the environment cannot express (rules, loopback).
 *
 * Upper-case `HTTP_PROXY` is read too (curl ignores it): in a CGI-style server, where a
 * request's `Proxy:` header becomes `HTTP_PROXY` ("httpoxy", CVE-2016-5385), build the
 * configuration with {@link make} instead.
 *
 * @example
 * ```ts
 * import { ConfigProvider, Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const config = Proxy.fromEnv().pipe(
 *   Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { HTTPS_PROXY: "http://127.0.0.1:3128" } })))
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromEnv = Effect.fnUntraced(function* (given?: Pick<Options, "rules" | "proxyLoopback">) {
  const options = yield* Validate.record("options", given ?? {})
  const read = Effect.fnUntraced(function* (name: string) {
    for (const key of [name.toLowerCase(), name.toUpperCase()]) {
      const value = yield* Config.option(Config.Redacted(key))
      if (Option.isSome(value) && Redacted.value(value.value).trim() !== "") return { key, value: value.value }
    }
    return undefined
  })
  const url = Effect.fnUntraced(function* (name: string) {
    const found = yield* read(name)
    return found === undefined ? undefined : yield* parseUrl(found.value, found.key)
  })
  const noProxy = yield* read("no_proxy")
  const base = yield* make({ rules: options.rules, proxyLoopback: options.proxyLoopback })
  const config: ProxyConfig = {
    ...base,
    http: yield* url("http_proxy"),
    https: yield* url("https_proxy"),
    all: yield* url("all_proxy"),
    noProxy: noProxy === undefined ? base.noProxy : yield* parseNoProxy(Redacted.value(noProxy.value), noProxy.key)
  }
  return config
})

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

/**
 * The {@link Route} that sends a request straight to the origin.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * Proxy.direct._tag // "Direct"
 * ```
 *
 * @since 0.1.0
 * @category routing
 */
export const direct: Route = { _tag: "Direct" }

/**
 * Whether `NO_PROXY` sends `host` (on `port`) direct, as curl decides it:
 *
 * - entries are separated by commas and/or spaces; `*` matches every host;
 * - a name matches itself and its subdomains, with or without a leading `.` (or `*.`),
 *   case-insensitively and ignoring a trailing dot; an internationalised name (`bücher.example`)
 *   is matched in punycode (`xn--bcher-kva.example`), the form a URL's host has, whichever way
 *   the entry and the host are written;
 * - IPv4 and IPv6 literals (bracketed or not) match the same address in any spelling,
 *   and CIDR ranges (`10.0.0.0/8`, `fd00::/8`) the addresses inside them; no DNS lookup
 *   is made, so a name never matches an IP entry;
 * - an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) is its IPv4 address: IPv4 entries and
 *   ranges (`127.0.0.0/8`) match it, and a range inside `::ffff:0:0/96`
 *   (`::ffff:10.0.0.0/104`) matches the IPv4 addresses it maps (curl matches neither);
 * - an entry with `:port` (`[v6]:port` for IPv6) matches only that port.
 *
 * Entries that do not parse never match (use {@link parseNoProxy} to reject them).
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * Proxy.isBypassed("api.internal.example", 443, ".internal.example") // true
 * Proxy.isBypassed("10.1.2.3", 80, "10.0.0.0/8") // true
 * Proxy.isBypassed("example.com", 8080, "example.com:443") // false
 * ```
 *
 * @since 0.1.0
 * @category routing
 */
export const isBypassed = (host: string, port: number | undefined, noProxy: string | NoProxy): boolean => {
  const patterns =
    typeof noProxy === "string"
      ? splitEntries(noProxy).flatMap((entry) => {
          const pattern = Host.parsePattern(entry)
          return typeof pattern === "string" ? [] : [pattern]
        })
      : noProxy.patterns
  const parsed = Host.parseHost(host)
  return patterns.some((pattern) => Host.matches(pattern, parsed, port))
}

/**
 * Decides the {@link Route} for a request URL: the first matching rule, else direct for
 * loopback hosts (unless `proxyLoopback`) and `NO_PROXY` hosts, else the proxy for the
 * URL's scheme (`https`/`http`, falling back to `all`), else direct. A string that is not
 * a URL routes direct (the client then reports the bad URL).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Proxy } from "@volley/core"
 *
 * const config = Effect.runSync(Proxy.make({ all: "socks5h://127.0.0.1:1080", noProxy: "example.org" }))
 * Proxy.route(config, "https://example.com/")._tag // "Proxy"
 * Proxy.route(config, "https://www.example.org/")._tag // "Direct"
 * ```
 *
 * @since 0.1.0
 * @category routing
 */
export const route = (config: ProxyConfig, url: string | URL): Route => {
  const parsed = typeof url === "string" ? URL.parse(url) : url
  if (parsed === null) return direct
  const host = Host.parseHost(parsed.hostname)
  // A scheme outside the table (`ftp:`...) is matched as port 80, as curl's NO_PROXY does.
  const port = parsed.port !== "" ? Number(parsed.port) : (portOfScheme(parsed.protocol) ?? 80)
  for (const rule of config.rules) {
    if (Host.matches(rule.pattern, host, port)) return rule.route
  }
  if (!config.proxyLoopback && Host.isLoopback(host)) return direct
  if (config.noProxy.patterns.some((pattern) => Host.matches(pattern, host, port))) return direct
  const proxy =
    (parsed.protocol === "https:" ? config.https : parsed.protocol === "http:" ? config.http : undefined) ?? config.all
  return proxy === undefined ? direct : { _tag: "Proxy", proxy }
}

/**
 * The port a URL scheme implies when the URL names none: 80 for `http:`, 443 for `https:`, 1080
 * for `socks5:` and `socks5h:` (any case, with its colon as `URL.protocol` gives it), else
 * `undefined`. The one table volley's routing, per-origin limits and connectors all use.
 *
 * @example
 * ```ts
 * import { Proxy } from "@volley/core"
 *
 * const url = new URL("https://example.com/a")
 * const port = url.port === "" ? Proxy.defaultPort(url.protocol) : Number(url.port) // 443
 * ```
 *
 * @since 0.1.0
 * @category routing
 */
export const defaultPort = (protocol: string): number | undefined => portOfScheme(protocol)

/**
 * Moves proxy failures out of `HttpClientError` into the error channel as
 * {@link ProxyConnectionError} / {@link ProxyAuthenticationError}, so they can be caught
 * by tag. (The proxied client reports them as the `cause` of a `TransportError`, since an
 * `HttpClient` can only fail with `HttpClientError`.)
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, Proxy } from "@volley/core"
 *
 * const program = Http.getText("https://example.com/").pipe(
 *   Proxy.unwrapErrors,
 *   Effect.catchTag("ProxyAuthenticationError", () => Effect.succeed("bad proxy password"))
 * )
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const unwrapErrors = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | ProxyError, R> =>
  Effect.mapError(effect, (error): E | ProxyError =>
    HttpClientError.isHttpClientError(error) &&
    error.reason._tag === "TransportError" &&
    isProxyError(error.reason.cause)
      ? error.reason.cause
      : error
  )

// What a wrong-typed value was, for error messages: primitives as they are, anything else by kind
// (never its contents, which may hold a password).
const kind = (value: unknown): string =>
  value === null || value === undefined
    ? String(value)
    : Array.isArray(value)
      ? "an array"
      : `a${/^[aeiou]/.test(typeof value) ? "n" : ""} ${typeof value}`
const shown = (value: unknown): string =>
  typeof value === "number" || typeof value === "boolean" || typeof value === "bigint" || value == null
    ? String(value)
    : `<${kind(value)}>`

const splitEntries = (value: string): Array<string> => value.split(/[\s,]+/).filter((entry) => entry !== "")

// One warning per parse, naming every such entry: logged when a layer is built, not per request.
const warnNeverMatches = (source: string, entries: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.logWarning(
    `${source}: ${entries.map((entry) => `"${entry}"`).join(", ")} ${entries.length === 1 ? "ends" : "end"} in a number, so URLs read such a host as an IPv4 address (or reject it) and no host name ever matches ${entries.length === 1 ? "it" : "them"}; ignored`
  ).pipe(Effect.annotateLogs({ source, entries: entries.join(", ") }))
