import { assert, describe, it } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Logger, Redacted, Result } from "effect"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import fc from "fast-check"
import { Proxy } from "../src/index.ts"

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  return (Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined) as E
}

const withEnv = (env: Record<string, string>) => Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))

// Generators: host labels, domains, IPv4 and IPv6 addresses.
const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/)
// The last label has a letter: an all-digit name such as "0.0.0.0" is an IPv4 address, not a domain.
const tld = fc.stringMatching(/^[a-z]{2,6}$/)
const domain = fc.tuple(fc.array(label, { maxLength: 3 }), tld).map(([labels, last]) => [...labels, last].join("."))
const port = fc.integer({ min: 1, max: 65535 })
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255))
const groups = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 })
const secret = fc.stringMatching(/^[A-Za-z0-9]{8,16}$/).map((s) => `Pw${s}`)

describe("Proxy", () => {
  describe("isBypassed", () => {
    const table: ReadonlyArray<readonly [host: string, port: number | undefined, noProxy: string, bypass: boolean]> = [
      ["example.com", 80, "example.com", true],
      ["www.example.com", 80, "example.com", true],
      ["www.example.com", 80, ".example.com", true],
      ["example.com", 80, ".example.com", true],
      ["a.b.example.com", 443, "*.example.com", true],
      ["notexample.com", 80, "example.com", false],
      ["example.com.evil.net", 80, "example.com", false],
      ["EXAMPLE.Com", 80, "example.COM", true],
      ["example.com.", 80, "example.com", true],
      ["anything.test", 1, "*", true],
      ["a.test", 80, "x.test, *", true],
      ["example.com", 80, "a.com  b.com,example.com", true],
      ["example.com", 80, "a.com,,b.com , ", false],
      ["example.com", 80, "", false],
      ["example.com", 8080, "example.com:8080", true],
      ["example.com", 80, "example.com:8080", false],
      ["example.com", undefined, "example.com:8080", false],
      ["127.0.0.1", 80, "127.0.0.1", true],
      ["127.0.0.2", 80, "127.0.0.1", false],
      ["10.1.2.3", 80, "10.0.0.0/8", true],
      ["11.0.0.1", 80, "10.0.0.0/8", false],
      ["192.168.1.200", 80, "192.168.1.128/25", true],
      ["192.168.1.100", 80, "192.168.1.128/25", false],
      ["1.2.3.4", 80, "0.0.0.0/0", true],
      ["1.2.3.4", 80, "2.3.4", false],
      ["localhost", 80, "127.0.0.1", false],
      ["[::1]", 80, "::1", true],
      ["::1", 80, "[::1]", true],
      ["0:0:0:0:0:0:0:1", 443, "::1", true],
      ["[2001:db8::5]", 443, "2001:db8::/32", true],
      ["[2001:db9::5]", 443, "2001:db8::/32", false],
      ["[fe80::1]", 443, "[fe80::]/10", true],
      ["[::1]", 8080, "[::1]:8080", true],
      ["[::1]", 8081, "[::1]:8080", false],
      ["10.0.0.1", 80, "10.0.0.0/8:80", true],
      ["::ffff:10.0.0.1", 80, "::ffff:10.0.0.1", true],
      // An IPv4 address and its IPv4-mapped IPv6 form are one address, either way round.
      ["[::ffff:127.0.0.1]", 8080, "127.0.0.0/8", true],
      ["[::ffff:7f00:1]", 80, "127.0.0.1", true],
      ["::ffff:10.0.0.1", 80, "10.0.0.1:80", true],
      ["::ffff:10.0.0.1", 81, "10.0.0.1:80", false],
      ["[::ffff:10.0.0.2]", 80, "10.0.0.1", false],
      ["[::ffff:1.2.3.4]", 80, "0.0.0.0/0", true],
      ["10.0.0.1", 80, "::ffff:10.0.0.0/104", true],
      ["10.0.0.1", 80, "[::ffff:10.0.0.1]", true],
      ["11.0.0.1", 80, "::ffff:10.0.0.0/104", false],
      // Not mapped: ::1, an IPv4-compatible or NAT64 address; and an IPv6 range wider than the mapped block.
      ["[::1]", 80, "0.0.0.0/0", false],
      ["[::a00:1]", 80, "10.0.0.1", false],
      ["[64:ff9b::a00:1]", 80, "10.0.0.1", false],
      ["10.0.0.1", 80, "::/0", false],
      // Internationalised names match in punycode, the form a URL's host has, whichever way each is written.
      ["xn--bcher-kva.example", 443, "bücher.example", true],
      ["www.xn--bcher-kva.example", 443, "*.BÜCHER.example", true],
      ["bücher.example", 443, "xn--bcher-kva.example", true],
      ["BÜCHER.example", 443, ".bücher.example", true],
      ["xn--bcher-kva.example", 8080, "bücher.example:443", false],
      ["buecher.example", 443, "bücher.example", false],
      // IDNA maps full-width digits and dots to ASCII ones: that entry is an address, as in a URL.
      ["10.0.0.1", 80, "１０．０．０．１", true],
      // Entries that do not parse never match; the valid ones still do.
      ["example.com", 80, "bad$entry, example.com", true],
      ["10.0.0.1", 80, "10.0.0.0/33", false],
      ["example.com", 80, "example.com:0", false],
      ["example.com", 80, "[::1", false]
    ]
    for (const [host, p, noProxy, bypass] of table) {
      it(`${bypass ? "bypasses" : "proxies"} ${host}:${p} with NO_PROXY="${noProxy}"`, () => {
        assert.strictEqual(Proxy.isBypassed(host, p, noProxy), bypass)
      })
    }

    it("matches a domain's subdomains with and without a leading dot, in any case", () => {
      fc.assert(
        fc.property(label, domain, port, fc.constantFrom("", ".", "*."), (sub, d, p, prefix) => {
          const entry = `${prefix}${d}`.toUpperCase()
          return Proxy.isBypassed(`${sub}.${d}`, p, entry) && Proxy.isBypassed(d, p, entry)
        })
      )
    })

    it("never matches a host that only ends with the same characters", () => {
      fc.assert(fc.property(label, domain, port, (prefix, d, p) => !Proxy.isBypassed(`${prefix}x${d}`, p, d)))
    })

    it("treats a list as the union of its entries, whatever the separators", () => {
      const entry = fc.oneof(
        domain,
        ipv4.map((a) => a.join(".")),
        fc.constant("*")
      )
      fc.assert(
        fc.property(
          fc.array(entry, { maxLength: 5 }),
          domain,
          port,
          fc.constantFrom(",", " ", ", ", " ,\t"),
          (entries, host, p, sep) => {
            const joined = Proxy.isBypassed(host, p, entries.join(sep))
            return joined === entries.some((e) => Proxy.isBypassed(host, p, e))
          }
        )
      )
    })

    it("matches every IPv4 address inside a CIDR range and none outside", () => {
      fc.assert(
        fc.property(ipv4, ipv4, fc.integer({ min: 0, max: 32 }), port, (a, b, prefix, p) => {
          const network = (x: ReadonlyArray<number>) =>
            Math.floor(x.reduce((acc, byte) => acc * 256 + byte, 0) / 2 ** (32 - prefix))
          return Proxy.isBypassed(b.join("."), p, `${a.join(".")}/${prefix}`) === (network(a) === network(b))
        })
      )
    })

    it("compares IPv6 literals by value, bracketed or not, compressed or not", () => {
      fc.assert(
        fc.property(groups, port, fc.boolean(), (g, p, bracket) => {
          const full = g.map((x) => x.toString(16)).join(":")
          const compressed = new URL(`http://[${full}]/`).hostname // WHATWG compresses it, brackets included
          const host = bracket ? `[${full}]` : full
          return Proxy.isBypassed(host, p, compressed) && Proxy.isBypassed(compressed, p, full)
        })
      )
    })

    it("matches a port-qualified entry on that port only", () => {
      fc.assert(
        fc.property(
          domain,
          port,
          port,
          (d, entryPort, p) => Proxy.isBypassed(d, p, `${d}:${entryPort}`) === (p === entryPort)
        )
      )
    })

    it("never throws, whatever the input", () => {
      fc.assert(
        fc.property(fc.string(), fc.option(fc.integer(), { nil: undefined }), fc.string(), (host, p, noProxy) => {
          return typeof Proxy.isBypassed(host, p, noProxy) === "boolean"
        })
      )
    })
  })

  describe("parseUrl", () => {
    it.effect("parses each scheme with its default port and redacts the password in the label", () =>
      Effect.gen(function* () {
        const cases = [
          ["http://proxy.example", "http", 80],
          ["https://proxy.example", "https", 443],
          ["socks5://proxy.example", "socks5", 1080],
          ["SOCKS5H://Proxy.Example:1081/", "socks5h", 1081],
          ["proxy.example:3128", "http", 3128],
          ["http://proxy.example:80", "http", 80],
          ["socks5://proxy.example:443", "socks5", 443],
          // A port the URL parser would drop (80 is http's default) after which the input goes on.
          ["socks5h://proxy.example:80?", "socks5h", 80],
          ["socks5h://proxy.example:80#", "socks5h", 80],
          ["socks5://proxy.example:80/.", "socks5", 80]
        ] as const
        for (const [input, protocol, p] of cases) {
          const proxy = yield* Proxy.parseUrl(input)
          assert.strictEqual(proxy.protocol, protocol)
          assert.strictEqual(proxy.hostname, "proxy.example")
          assert.strictEqual(proxy.port, p)
        }
        const authed = yield* Proxy.parseUrl("http://al%40ice:p%40ss%3Aword@[::1]:3128")
        assert.strictEqual(authed.hostname, "[::1]")
        assert.strictEqual(authed.username, "al@ice")
        assert.strictEqual(Redacted.value(authed.password as Redacted.Redacted<string>), "p@ss:word")
        assert.strictEqual(authed.label, "http://al%40ice:<redacted>@[::1]:3128")
        assert.notInclude(JSON.stringify(authed), "p@ss")
        // A lone user name is often a token: hidden too; an empty one with a password stays empty.
        assert.strictEqual(
          (yield* Proxy.parseUrl("http://ghp_TOKEN@proxy.example:1")).label,
          "http://<redacted>@proxy.example:1"
        )
        assert.strictEqual(
          (yield* Proxy.parseUrl("http://:pw@proxy.example:1")).label,
          "http://:<redacted>@proxy.example:1"
        )
      })
    )

    it("shows rejected inputs that hold no password as they are", () => {
      for (const input of ["proxy.example", "ftp://proxy.example:21", "http://[::1]:99999", "http://h:1/path?q#f"]) {
        const exit = Effect.runSyncExit(Proxy.parseUrl(input))
        assert.include(String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : ""), `("${input}")`)
      }
    })

    it.effect("rejects bad URLs with a reason and without the password", () =>
      Effect.gen(function* () {
        const cases = [
          ["ftp://u:hunter22@host:21", 'unsupported scheme "ftp"'],
          ["socks4://u:hunter22@host:1080", 'unsupported scheme "socks4"'],
          ["proxy.example", "missing scheme and port"],
          ["u:hunter22@proxy.example", "missing scheme and port"],
          ["http://u:hunter22@host:0", "port must be an integer from 1 to 65535"],
          ["http://u:hunter22@host:70000", "port must be an integer from 1 to 65535"],
          ["http://u:hunter22@host:3128/path", "no path, query or fragment"],
          ["http://u:hunter22@host:3128?x=1", "no path, query or fragment"],
          ["http://u:%zzhunter22@host:3128", "malformed percent-encoding"],
          ["http://u:hunter22@:3128", "not a valid URL"],
          ["   ", "the URL is empty"],
          ["http://u:hunter22", "not a valid URL"],
          ["u:hunter22", "missing scheme and port"]
        ] as const
        for (const [input, reason] of cases) {
          const error = failureOf(yield* Effect.exit(Proxy.parseUrl(input, "HTTPS_PROXY")))
          assert.instanceOf(error, Proxy.InvalidProxyUrlError)
          assert.include(error.reason, reason)
          assert.include(error.message, "HTTPS_PROXY")
          assert.notInclude(error.message, "hunter22")
        }
      })
    )

    it("hides digits after a colon that no port can be, which without @host may be a password", () => {
      const cases = [
        ["http://alice:123456", "http://alice:<redacted>"],
        ["alice:123456", "alice:<redacted>"],
        ["socks5h://alice:00000/", "socks5h://alice:<redacted>"],
        ["http://alice:99999?x", "http://alice:<redacted>"]
      ] as const
      for (const [input, shown] of cases) {
        const exit = Effect.runSyncExit(Proxy.parseUrl(input, "all"))
        const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        assert.instanceOf(error, Proxy.InvalidProxyUrlError)
        const e = error as Proxy.InvalidProxyUrlError
        assert.strictEqual(e.input, shown)
        // Still says what is wrong, and why the value is not shown.
        assert.include(e.reason, "port must be an integer from 1 to 65535")
        assert.include(e.reason, "may be a password")
        for (const text of [e.message, String(e), JSON.stringify(e)]) {
          assert.notMatch(text, /123456|99999|00000/, text)
        }
      }
      // A port that is one, or after a host no user name can be (user info ends in "@"), still shows.
      const exit = Effect.runSyncExit(Proxy.parseUrl("http://u:pw@proxy.example:99999"))
      assert.include(String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : ""), "got 99999")
      fc.assert(
        fc.property(
          // Digits no port can be (a port may have leading zeros: `000080` is port 80, and shows).
          fc.stringMatching(/^[0-9]{6,16}$/).filter((digits) => Number(digits) === 0 || Number(digits) > 65535),
          fc.constantFrom("http://u:%s", "u:%s", "socks5://u:%s/", "https://u:%s?q"),
          (digits, template) => {
            const exit = Effect.runSyncExit(Proxy.parseUrl(template.replace("%s", digits)))
            return Exit.isFailure(exit) && !JSON.stringify(Cause.squash(exit.cause)).includes(digits)
          }
        )
      )
    })

    it("never puts the password in an error message", () => {
      fc.assert(
        fc.property(
          secret,
          fc.constantFrom(
            "ftp://u:%s@h:1",
            "http://u:%s@h:99999",
            "http://u:%s@h:1/x",
            "u:%s@h",
            "http://u:%s@:1",
            "http://u:%s",
            "u:%s",
            "socks5://u:%s/"
          ),
          (password, template) => {
            const exit = Effect.runSyncExit(Proxy.parseUrl(template.replace("%s", password)))
            return Exit.isFailure(exit) && !String(Cause.squash(exit.cause)).includes(password)
          }
        )
      )
    })
  })

  describe("parseNoProxy", () => {
    it.effect("names the first bad entry and why", () =>
      Effect.gen(function* () {
        const cases = [
          ["a.example, 10.0.0.0/33", "10.0.0.0/33", "CIDR prefix"],
          ["host.example:99999", "host.example:99999", "port must be"],
          ["[::1", "[::1", "missing ]"],
          ["foo$bar", "foo$bar", "not a host name"],
          ["name.example/8", "name.example/8", "needs an IP address"]
        ] as const
        for (const [value, entry, reason] of cases) {
          const error = failureOf(yield* Effect.exit(Proxy.parseNoProxy(value)))
          assert.instanceOf(error, Proxy.InvalidNoProxyError)
          assert.strictEqual(error.entry, entry)
          assert.include(error.reason, reason)
        }
        assert.strictEqual((yield* Proxy.parseNoProxy(" a.example ,, 10.0.0.0/8 [::1]:80 ")).patterns.length, 3)
      })
    )

    it.effect("accepts internationalised names, kept in punycode; rejects what a URL host cannot hold", () =>
      Effect.gen(function* () {
        const noProxy = yield* Proxy.parseNoProxy("bücher.example, .münchen.de:8443, *.例え.テスト")
        assert.deepStrictEqual(noProxy.patterns, [
          { _tag: "Domain", domain: "xn--bcher-kva.example", port: undefined },
          { _tag: "Domain", domain: "xn--mnchen-3ya.de", port: 8443 },
          { _tag: "Domain", domain: "xn--r8jz45g.xn--zckzah", port: undefined }
        ])
        for (const entry of ["bü?cher.example", "bü#cher.example", "bü@cher.example", "bü%41.example"]) {
          const error = failureOf(yield* Effect.exit(Proxy.parseNoProxy(`a.example, ${entry}`)))
          assert.instanceOf(error, Proxy.InvalidNoProxyError)
          assert.strictEqual(error.entry, entry)
          assert.include(error.reason, "not a host name")
        }
      })
    )

    it.effect("warns once, without failing, about entries that can never match a URL's host", () =>
      Effect.gen(function* () {
        const warnings: Array<string> = []
        const capture = Logger.make(({ logLevel, message }) => {
          if (logLevel === "Warn") warnings.push(String(message))
        })
        const withLogs = <A, E>(effect: Effect.Effect<A, E>) => effect.pipe(Effect.provide(Logger.layer([capture])))
        // URLs read both as IPv4 (one rejected, one rewritten): no host name is ever either.
        assert.isTrue(Result.isFailure(Result.try(() => new URL("http://300.1.1.1/"))))
        assert.strictEqual(new URL("http://1.2.3/").hostname, "1.2.0.3")
        const noProxy = yield* withLogs(Proxy.parseNoProxy("300.1.1.1, example.com, 1.2.3, 10.0.0.0/8"))
        assert.strictEqual(noProxy.patterns.length, 4)
        assert.strictEqual(warnings.length, 1)
        assert.include(warnings[0], '"300.1.1.1", "1.2.3"')
        assert.include(warnings[0], "NO_PROXY")
        // Sound lists (names, IP literals, CIDR ranges) log nothing.
        yield* withLogs(Proxy.parseNoProxy("example.com, 1.2.3.4, [::1], host-1.example, 10.0.0.0/8"))
        assert.strictEqual(warnings.length, 1)
        yield* withLogs(Proxy.make({ rules: [{ match: "1.2.3", via: "direct" }] }))
        assert.strictEqual(warnings.length, 2)
        assert.include(warnings[1], "rules[0].match")
      })
    )
  })

  describe("route", () => {
    it.effect("picks the scheme's proxy, falls back to all, and honours NO_PROXY", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.make({
          http: "http://h.proxy:3128",
          all: "socks5h://all.proxy:1080",
          noProxy: ".internal.example"
        })
        const via = (url: string) => {
          const r = Proxy.route(config, url)
          return r._tag === "Direct" ? "direct" : r.proxy.hostname
        }
        assert.strictEqual(via("http://example.com/"), "h.proxy")
        assert.strictEqual(via("https://example.com/"), "all.proxy")
        assert.strictEqual(via("https://api.internal.example/"), "direct")
        assert.strictEqual(via("not a url"), "direct")
      })
    )

    it.effect("sends loopback direct unless proxyLoopback is set", () =>
      Effect.gen(function* () {
        const loopbacks = [
          "http://localhost:1/",
          "http://127.0.0.5/",
          "http://[::1]:8/",
          "http://a.localhost/",
          // 127.0.0.1 mapped into IPv6, in both spellings
          "http://[::ffff:127.0.0.1]:9/",
          "http://[::ffff:7f00:1]/",
          // the unspecified addresses: a connection to them reaches this machine
          "http://0.0.0.0:3000/",
          "http://[::]:3000/",
          "http://[::ffff:0.0.0.0]:3000/"
        ]
        for (const url of loopbacks) {
          const off = yield* Proxy.make({ all: "http://p:1" })
          const on = yield* Proxy.make({ all: "http://p:1", proxyLoopback: true })
          assert.strictEqual(Proxy.route(off, url)._tag, "Direct")
          assert.strictEqual(Proxy.route(on, url)._tag, "Proxy")
        }
      })
    )

    it.effect("matches an internationalised origin against NO_PROXY entries and rules written in Unicode", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.make({
          all: "http://p:1",
          noProxy: "bücher.example",
          rules: [{ match: "münchen.de", via: "socks5h://rule.proxy:1080" }]
        })
        const via = (url: string) => {
          const r = Proxy.route(config, url)
          return r._tag === "Direct" ? "direct" : r.proxy.hostname
        }
        // A URL's host is in punycode, however the URL was written.
        assert.strictEqual(via("https://www.bücher.example/"), "direct")
        assert.strictEqual(via("https://xn--bcher-kva.example/"), "direct")
        assert.strictEqual(via("https://buecher.example/"), "p")
        assert.strictEqual(via("https://MÜNCHEN.de/"), "rule.proxy")
      })
    )

    it.effect("matches an IPv4-mapped IPv6 origin against IPv4 NO_PROXY entries and rules", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.make({
          all: "http://p:1",
          proxyLoopback: true,
          noProxy: "127.0.0.0/8, 10.0.0.1",
          rules: [{ match: "192.168.0.0/16", via: "socks5h://rule.proxy:1080" }]
        })
        const via = (url: string) => {
          const r = Proxy.route(config, url)
          return r._tag === "Direct" ? "direct" : r.proxy.hostname
        }
        assert.strictEqual(via("http://[::ffff:127.0.0.1]:8080/"), "direct")
        assert.strictEqual(via("https://[::ffff:7f00:2]/"), "direct")
        assert.strictEqual(via("http://[::ffff:10.0.0.1]/"), "direct")
        assert.strictEqual(via("http://[::ffff:10.0.0.2]/"), "p")
        assert.strictEqual(via("http://[::ffff:192.168.1.1]/"), "rule.proxy")
      })
    )

    it.effect("evaluates rules in order, before loopback and NO_PROXY", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.make({
          all: "http://default.proxy:3128",
          noProxy: "*",
          rules: [
            { match: "eu.example.com", via: "socks5h://eu.proxy:1080" },
            { match: "example.com", via: "direct" },
            { match: "localhost", via: "http://local.proxy:8080" },
            { match: "10.0.0.0/8:443", via: "https://ten.proxy:8443" }
          ]
        })
        const via = (url: string) => {
          const r = Proxy.route(config, url)
          return r._tag === "Direct" ? "direct" : r.proxy.hostname
        }
        assert.strictEqual(via("https://api.eu.example.com/"), "eu.proxy")
        assert.strictEqual(via("https://us.example.com/"), "direct")
        assert.strictEqual(via("http://localhost:3000/"), "local.proxy")
        assert.strictEqual(via("https://10.1.1.1/"), "ten.proxy")
        assert.strictEqual(via("http://10.1.1.1/"), "direct") // no rule for port 80, and NO_PROXY=*
      })
    )

    it.effect("rejects a bad rule with the rule's index", () =>
      Effect.gen(function* () {
        const badMatch = failureOf(yield* Effect.exit(Proxy.make({ rules: [{ match: "a b/c", via: "direct" }] })))
        assert.instanceOf(badMatch, Proxy.InvalidNoProxyError)
        assert.strictEqual(badMatch.source, "rules[0].match")
        const badVia = failureOf(
          yield* Effect.exit(Proxy.make({ rules: [{ match: "a.example", via: "gopher://u:hunter22@x:1" }] }))
        )
        assert.instanceOf(badVia, Proxy.InvalidProxyUrlError)
        assert.include(badVia.message, "rules[0].via")
        assert.notInclude(badVia.message, "hunter22")
      })
    )

    // Found by review: from JavaScript (or a cast) these died with a TypeError (`raw.trim`,
    // `value.split`, reading `match` of null), and `proxyLoopback: "false"` was taken as true.
    it.effect("fails with a typed error naming the option when an option has the wrong type", () =>
      Effect.gen(function* () {
        const typed = function* (options: unknown) {
          const exit = yield* Effect.exit(Proxy.make(options as Proxy.Options))
          assert.isTrue(Exit.isFailure(exit) && !Cause.hasDies(exit.cause), `not a typed failure: ${String(exit)}`)
          return failureOf(exit)
        }
        const loopback = yield* typed({ all: "http://127.0.0.1:3128", proxyLoopback: "false" })
        assert.strictEqual(loopback._tag, "InvalidOptionsError")
        assert.strictEqual(loopback.message, 'Invalid option proxyLoopback: must be one of true, false, got "false"')
        for (const field of ["all", "http", "https"] as const) {
          const error = yield* typed({ [field]: 3128 })
          assert.instanceOf(error, Proxy.InvalidProxyUrlError)
          assert.strictEqual(error.source, field)
          assert.include(error.message, "must be a string URL, got a number")
        }
        const objectUrl = yield* typed({ all: { url: "http://u:hunter22@p:1" } })
        assert.instanceOf(objectUrl, Proxy.InvalidProxyUrlError)
        assert.notInclude(objectUrl.message, "hunter22")
        for (const via of [1, null, undefined]) {
          const error = yield* typed({ rules: [{ match: "a.example", via }] })
          assert.instanceOf(error, Proxy.InvalidProxyUrlError)
          assert.strictEqual(error.source, "rules[0].via")
        }
        const match = yield* typed({ rules: [{ match: 1, via: "direct" }] })
        assert.instanceOf(match, Proxy.InvalidNoProxyError)
        assert.strictEqual(match.source, "rules[0].match")
        const noProxy = yield* typed({ noProxy: 1 })
        assert.instanceOf(noProxy, Proxy.InvalidNoProxyError)
        assert.strictEqual(
          noProxy.message,
          'Invalid entry "1" in noProxy: must be a string of comma- or space-separated entries, got a number'
        )
        const rules = yield* typed({ rules: "x" })
        assert.strictEqual(rules._tag, "InvalidOptionsError")
        assert.strictEqual(rules.message, "Invalid option rules: must be an array of { match, via }, got a string")
        const rule = yield* typed({ rules: [{ match: "a.example", via: "direct" }, null] })
        assert.strictEqual(rule._tag, "InvalidOptionsError")
        assert.strictEqual(rule.message, "Invalid option rules[1]: must be an object { match, via }, got null")
      })
    )

    // Found by a boundary sweep: `make("http://proxy:3128")` (a URL for the options) routed every
    // request direct without a word, and `make(null)` died with a TypeError.
    it.effect("rejects options that are not an object, as make and fromEnv; null is none", () =>
      Effect.gen(function* () {
        const url = yield* Effect.flip(Proxy.make("http://proxy.example:3128" as unknown as Proxy.Options))
        assert.strictEqual(url._tag, "InvalidOptionsError")
        assert.strictEqual(url.message, 'Invalid option options: must be an object, got "http://proxy.example:3128"')
        const fromEnv = yield* Effect.flip(Proxy.fromEnv("x" as unknown as Proxy.Options))
        assert.strictEqual(fromEnv._tag, "InvalidOptionsError")
        assert.deepStrictEqual(yield* Proxy.make(null as unknown as Proxy.Options), Proxy.none)
        // Found by review: a proxy URL with credentials given for the options (or for any option
        // taking a boolean or a list) was echoed whole, its password in the error's message.
        const secret = yield* Effect.flip(
          Proxy.make("http://alice:s3cret@proxy.example:3128" as unknown as Proxy.Options)
        )
        assert.strictEqual(
          secret.message,
          'Invalid option options: must be an object, got "http://REDACTED:REDACTED@proxy.example:3128"'
        )
        const loopback = yield* Effect.flip(
          Proxy.make({ proxyLoopback: "http://alice:s3cret@proxy.example:3128" as unknown as boolean })
        )
        assert.notInclude(loopback.message, "s3cret")
        assert.deepStrictEqual(
          yield* Proxy.fromEnv(null as unknown as Proxy.Options).pipe(
            Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))
          ),
          Proxy.none
        )
      })
    )

    it.effect("takes null options as unset, like undefined", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.make({
          all: null,
          http: null,
          https: null,
          noProxy: null,
          rules: null,
          proxyLoopback: null
        } as unknown as Proxy.Options)
        assert.deepStrictEqual(config, Proxy.none)
      })
    )
  })

  describe("fromEnv", () => {
    it.effect("reads the four variables, lower case winning over upper case", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.fromEnv().pipe(
          withEnv({
            HTTP_PROXY: "http://upper:1",
            http_proxy: "http://lower:2",
            HTTPS_PROXY: "http://upper-only:3",
            ALL_PROXY: "socks5h://u:hunter22@all:4",
            no_proxy: "internal.example",
            NO_PROXY: "ignored.example"
          })
        )
        assert.strictEqual(config.http?.hostname, "lower")
        assert.strictEqual(config.https?.hostname, "upper-only")
        assert.strictEqual(config.all?.label, "socks5h://u:<redacted>@all:4")
        assert.strictEqual(config.noProxy.source, "internal.example")
      })
    )

    it.effect("treats empty variables as unset and gives no proxy without any", () =>
      Effect.gen(function* () {
        const config = yield* Proxy.fromEnv().pipe(withEnv({ http_proxy: "", HTTP_PROXY: "http://upper:1" }))
        assert.strictEqual(config.http?.hostname, "upper")
        const empty = yield* Proxy.fromEnv().pipe(withEnv({}))
        assert.strictEqual(Proxy.route(empty, "https://example.com/")._tag, "Direct")
      })
    )

    it.effect("fails naming the variable, without the password, on a bad URL or NO_PROXY", () =>
      Effect.gen(function* () {
        const url = failureOf(
          yield* Effect.exit(Proxy.fromEnv().pipe(withEnv({ https_proxy: "htp://bob:hunter22@proxy:3128" })))
        )
        assert.instanceOf(url, Proxy.InvalidProxyUrlError)
        assert.strictEqual(url.source, "https_proxy")
        assert.notInclude(url.message, "hunter22")
        const noProxy = failureOf(
          yield* Effect.exit(Proxy.fromEnv().pipe(withEnv({ NO_PROXY: "ok.example,10.0.0.0/99" })))
        )
        assert.instanceOf(noProxy, Proxy.InvalidNoProxyError)
        assert.strictEqual(noProxy.source, "NO_PROXY")
      })
    )
  })

  describe("unwrapErrors", () => {
    it.effect("lifts a proxy error out of an HttpClientError and leaves others alone", () =>
      Effect.gen(function* () {
        const request = HttpClientRequest.get("https://example.com/")
        const proxyError = new Proxy.ProxyConnectionError({
          proxy: "http://p:1",
          target: "example.com:443",
          reason: "x"
        })
        const transport = (cause: unknown) =>
          new HttpClientError.HttpClientError({ reason: new HttpClientError.TransportError({ request, cause }) })
        const lifted = failureOf(yield* Effect.exit(Proxy.unwrapErrors(Effect.fail(transport(proxyError)))))
        assert.strictEqual(lifted, proxyError)
        const other = transport(new Error("reset"))
        assert.strictEqual(failureOf(yield* Effect.exit(Proxy.unwrapErrors(Effect.fail(other)))), other)
      })
    )
  })
})
