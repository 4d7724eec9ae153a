import { assert, describe, it } from "@effect/vitest"
import { canonical, fromUrl } from "../../../src/internal/http/target.ts"

// What the WHATWG parser makes of `text`, in the parts undici takes.
const parsed = (text: string) => {
  const url = new URL(text)
  return { origin: url.origin, path: url.pathname + url.search, href: url.href, https: url.protocol === "https:" }
}

// Pieces of URLs, each slot's plain ones first and then tricky ones, combined at random below.
const piece = (plain: ReadonlyArray<string>, tricky: ReadonlyArray<string>) => ({ plain, tricky })
const slots = [
  piece(["http://", "https://"], ["HTTP://", "Https://", "ftp://", "http:/", "http:\\\\", " http://", ""]),
  piece(
    ["127.0.0.1", "localhost", "api.example.com", "a-b.c-d.io", "sub.0day.net", "x1.y2", "255.255.255.255", "0.0.0.0"],
    [
      "Example.com",
      "127.1",
      "0x7f.0.0.1",
      "010.0.0.1",
      "1.2.3.256",
      "1.2.3.4.5",
      "2130706433",
      "1.2.3.04",
      "1.2.3.4.",
      "example.com.",
      ".example.com",
      "a..b",
      "foo.123",
      "foo.0x1",
      "xn--nxasmq6b.com",
      "xn--a.com",
      "a.xn--zz",
      "exa mple.com",
      "ex%41mple.com",
      "a_b.com",
      "[::1]",
      "user:pw@host.com",
      "@host.com",
      "hé.com",
      "-lead.com",
      ""
    ]
  ),
  piece(["", ":8080", ":65535", ":1"], [":80", ":443", ":0", ":08080", ":65536", ":123456", ":", ":8x"]),
  piece(
    [
      "/",
      "/2b",
      "/a/b/c",
      "/v1/items/42",
      "/.hidden/x",
      "/a..b/c.",
      "/..a",
      "/a%20b",
      "/~u/:x@y;z=1,2+3$4!5*6(7)8&9",
      "//d"
    ],
    [
      "",
      "/a/./b",
      "/a/../b",
      "/.",
      "/..",
      "/a/.",
      "/a/..",
      "/%2e/x",
      "/%2E%2e/x",
      "/.%2e/x",
      "/a%zzb",
      "/a b",
      "/a\\b",
      "/a\tb",
      "/ä",
      "/a|b",
      "/a^b",
      "/a{b}",
      "/a`b",
      '/a"b',
      "/a'b",
      "/a<b>",
      "/a[b]"
    ]
  ),
  piece(["", "?a=1", "?a=1&b=2", "?x/./y/../z", "?q=%2e%zz", "??"], ["?", "?a b", "?a'b", '?a"b', "?ä", "?a<b"]),
  piece([""], ["#", "#f", "#a b"]),
  piece([""], [" ", "\t", "\n"])
]

// A small seeded generator, so that a failure names a URL that fails again.
const random = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x80000000
}

describe("internal/http/target", () => {
  it("reads a URL written as the parser writes it from its text, as the parser would", () => {
    assert.deepStrictEqual(
      { ...canonical("http://127.0.0.1:8080/2b") },
      { origin: "http://127.0.0.1:8080", path: "/2b", href: "http://127.0.0.1:8080/2b", https: false }
    )
    for (const text of [
      "https://api.example.com/v1/items?id=3&q=a%20b",
      "http://a-b.0day.io:65535//x/.hidden/a..b/c.?q=./y/../%2e&r=?",
      "https://255.255.255.255:1/~u/:x@y;z=1,2+3$4!5*6(7)8&9'%zz"
    ]) {
      assert.deepStrictEqual({ ...canonical(text) }, parsed(text), text)
    }
  })

  it("leaves to the parser every URL the parser would write otherwise, or might", () => {
    for (const text of [
      "HTTP://example.com/",
      "http://Example.com/",
      "http://example.com",
      "http://example.com?x=1",
      "http://example.com:80/",
      "https://example.com:443/",
      "http://example.com:08080/",
      "http://example.com:/",
      "http://127.1/",
      "http://0x7f.0.0.1/",
      "http://1.2.3.4./",
      "http://example.com./",
      "http://xn--nxasmq6b.com/",
      "http://u:p@example.com/",
      "http://[::1]:8080/",
      "http://example.com/a/../b",
      "http://example.com/a/./b",
      "http://example.com/a/..",
      "http://example.com/%2e%2e/b",
      "http://example.com/%2E/b",
      "http://example.com/.%2E/b",
      "http://example.com/a/%2E",
      "http://foo.123/",
      "http://1.2.3.4.5/",
      "http://1.2.3.256/",
      "http://example.com:65536/",
      "http://example.com:0/",
      "http://a_b.com/",
      "http://exa%41mple.com/",
      "http://example.com/a|b",
      "http://example.com/a\\b",
      "http://example.com/a b",
      "http://example.com/ä",
      "http://example.com/a?",
      "http://example.com/a?x'y",
      "http://example.com/a#frag",
      "http://example.com/a#",
      " http://example.com/",
      "http://example.com/\n",
      "ftp://example.com/"
    ]) {
      assert.isUndefined(canonical(text), text)
    }
  })

  it("agrees with the WHATWG parser on every URL it reads (many tricky ones, generated)", () => {
    const next = random(20261205)
    const pick = (xs: ReadonlyArray<string>) => xs[Math.floor(next() * xs.length)]!
    let read = 0
    let left = 0
    for (let n = 0; n < 40_000; n++) {
      const text = slots.map((slot) => pick(next() < 0.8 ? slot.plain : slot.tricky)).join("")
      const target = canonical(text)
      if (target === undefined) {
        left++
        continue
      }
      read++
      assert.deepStrictEqual({ ...target }, parsed(text), text)
      assert.strictEqual(new URL(text).href, text, text)
    }
    // Both ways taken many times: the check above is not vacuous.
    assert.isAbove(read, 2_000)
    assert.isAbove(left, 2_000)
  })

  it("takes a parsed URL's parts, reporting it without its fragment, and refuses other schemes", () => {
    assert.deepStrictEqual(
      { ...fromUrl(new URL("HTTPS://Example.com:443/a/../b?x=1#frag")) },
      { origin: "https://example.com", path: "/b?x=1", href: "https://example.com/b?x=1", https: true }
    )
    assert.strictEqual(fromUrl(new URL("http://example.com/a#"))?.href, "http://example.com/a#")
    assert.isUndefined(fromUrl(new URL("ftp://example.com/")))
  })
})
