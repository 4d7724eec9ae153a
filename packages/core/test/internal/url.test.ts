// Origin keys (the per-host limit's, Resilience's per-host keys): one key per origin however a
// URL spells it, the same the URL parser (and so undici) resolves it to.
import { assert, describe, it } from "@effect/vitest"
import fc from "fast-check"
import { originOf, redactUrl } from "../../src/internal/url.ts"

describe("originOf", () => {
  it("keys a plain URL by scheme, host and port, lower case, without user info or default port", () => {
    assert.strictEqual(originOf("http://a.test/x?q#f"), "http://a.test")
    assert.strictEqual(originOf("HTTP://A.Test:80"), "http://a.test")
    assert.strictEqual(originOf("https://u:p@a-b.test:8443?q"), "https://a-b.test:8443")
    assert.strictEqual(originOf("https://a.test:443/"), "https://a.test")
    assert.strictEqual(originOf("http://127.0.0.1:8080#f"), "http://127.0.0.1:8080")
    assert.strictEqual(originOf("http://a.test:/x"), "http://a.test")
  })

  it("keys every other spelling of an origin as the URL parser resolves it", () => {
    const spellings: ReadonlyArray<readonly [string, string]> = [
      ["http://127.0.0.1:08080/x", "http://127.0.0.1:8080"], // leading zero in the port
      ["http://a.test:0080/x", "http://a.test"], // ... of the default port
      ["http://127.0.0.1:8080\\x", "http://127.0.0.1:8080"], // `\` for `/`
      ["http://a.test\\@b.test/", "http://a.test"], // ... which ends the authority before `@`
      ["http://127.0.0.%31:8080/x", "http://127.0.0.1:8080"], // percent-encoded host
      ["http://a%2Etest/", "http://a.test"],
      ["http://127.0.\t0.1:80\n80/x", "http://127.0.0.1:8080"], // tabs and newlines dropped
      [" http://a.test/", "http://a.test"], // leading space trimmed
      ["ht\ttp://a.test/", "http://a.test"],
      ["http://127.1:8080/", "http://127.0.0.1:8080"], // IPv4 shorthand
      ["http://2130706433/", "http://127.0.0.1"], // ... as one number
      ["http://0x7f.1/", "http://127.0.0.1"], // ... in hex
      ["http://0177.0.0.01/", "http://127.0.0.1"], // ... in octal
      ["http://010.0.0.1/", "http://8.0.0.1"],
      ["http://127.0.0.1./", "http://127.0.0.1"], // ... with a trailing dot
      ["http://[0:0:0:0:0:0:0:1]:80/", "http://[::1]"], // IPv6 compressed
      ["http:///a.test/x", "http://a.test"], // extra slashes skipped
      ["http:a.test/x", "http://a.test"], // ... or missing ones
      ["http:\\\\a.test/x", "http://a.test"],
      ["http://Bücher.test/", "http://xn--bcher-kva.test"] // non-ASCII host
    ]
    for (const [url, origin] of spellings) assert.strictEqual(originOf(url), origin, JSON.stringify(url))
  })

  it("agrees with the URL parser's origin for any http(s) URL that parses", () => {
    const part = fc.string({
      unit: fc.constantFrom("a", "B", "1", "0", "7", "x", ".", "-", "%", "3", "\\", "\t", "\n", " ", ":", "@", "é"),
      maxLength: 12
    })
    const number = fc.constantFrom("0", "00", "01", "1", "9", "127", "255", "256", "0x1f", "1a", "")
    const dotted = fc.array(number, { minLength: 1, maxLength: 5 }).map((parts) => parts.join("."))
    fc.assert(
      fc.property(
        fc.constantFrom("http://", "HTTPS://", "http:/", "http:", " https://", "http:\\\\"),
        fc.oneof(part, dotted),
        fc.option(fc.constantFrom("80", "443", "080", "8080", "08080", "", "65535"), { nil: undefined }),
        fc.constantFrom("", "/x", "?q=/", "#f", "\\x"),
        (scheme, host, port, rest) => {
          const url = `${scheme}${host}${port === undefined ? "" : `:${port}`}${rest}`
          const parsed = URL.parse(url)
          if (parsed !== null) assert.strictEqual(originOf(url), parsed.origin, JSON.stringify(url))
        }
      ),
      { numRuns: 5000 }
    )
  })

  it("keys a URL that does not parse by its text, and relative URLs as one", () => {
    assert.strictEqual(originOf("http://a.test:99999/x"), "http://a.test:99999")
    assert.strictEqual(originOf("http://exa mple.test/"), "http://exa mple.test")
    assert.strictEqual(originOf("socks5://proxy.test:1080"), "socks5://proxy.test")
    assert.strictEqual(originOf("/x"), "")
    assert.strictEqual(originOf("x?y"), "")
  })
})

describe("redactUrl", () => {
  // Found by review: a password holding a `/`, `?`, `#` or `\` makes the URL fail on its port (the
  // parser ends the authority there), and Effect's redaction, which finds user info as the parser
  // does, left it as given.
  it("redacts the user info of a URL that does not parse, whatever its password holds", () => {
    for (const [url, shown] of [
      ["http://user:pa/ss@host/", "http://REDACTED:REDACTED@host/"],
      ["http://user:p?ss@host", "http://REDACTED:REDACTED@host"],
      ["http://u:p#w@host", "http://REDACTED:REDACTED@host"],
      ["http://u:p\\w@host/x", "http://REDACTED:REDACTED@host/x"],
      ["HTTPS:\\\\u:p/w@host", "HTTPS:\\\\REDACTED:REDACTED@host"],
      ["\t http://u:p/w@h", "http://REDACTED:REDACTED@h"],
      ["//u:p/w@bad host", "//REDACTED:REDACTED@bad host"],
      ["ftp://a:b/c@d", "ftp://REDACTED:REDACTED@d"],
      // Where such a password ends cannot be told: up to the last `@`.
      ["http://u:p/w@h/x@y", "http://REDACTED:REDACTED@y"],
      ["http://u:p/w@h/?Signature=abc", "http://REDACTED:REDACTED@h/?Signature=REDACTED"]
    ] as const) {
      assert.strictEqual(redactUrl(url), shown, url)
    }
  })

  it("leaves URLs without user info as Effect's redaction does", () => {
    for (const url of [
      "http://bad host/a@b", // not parsed, no user info
      "http://ho st:8080/a@b", // a port before the first `/`
      "http://us/er:pass@host/", // parses: a path
      "http://u:1#w@host", // parses: a port and a fragment
      "http://host/a@b?x=y@z",
      "not a URL: a/b@c"
    ]) {
      assert.strictEqual(redactUrl(url, []), url, url)
    }
    assert.strictEqual(redactUrl("http://u:p@bad host/x", []), "http://REDACTED:REDACTED@bad host/x")
    assert.strictEqual(redactUrl("http://u:p@host/x?sig=1", ["sig"]), "http://REDACTED:REDACTED@host/x?sig=REDACTED")
  })
})
