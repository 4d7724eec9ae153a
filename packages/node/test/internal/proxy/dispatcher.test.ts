// The routing dispatcher's bookkeeping: socks5:// routes resolve names locally and keep one
// agent per name, at most `maxNamedRoutes` of them, the least recently used closed first.
import { assert, describe, it } from "@effect/vitest"
import { Proxy } from "@volley/core"
import { Effect } from "effect"
import { RoutingDispatcher, withHost } from "../../../src/internal/proxy/dispatcher.ts"

describe("RoutingDispatcher", () => {
  it.effect("keeps at most maxNamedRoutes per-name socks5 agents, closing the least recently used", () =>
    Effect.gen(function* () {
      const proxy = yield* Proxy.parseUrl("socks5://127.0.0.1:1080")
      const config = yield* Proxy.make({ all: "socks5://127.0.0.1:1080" })
      const dispatcher = new RoutingDispatcher(
        config,
        {},
        { originTls: undefined, proxyTls: undefined, tunnelHttp: false, maxNamedRoutes: 2 }
      )
      const a = dispatcher.via(proxy, "a.example")
      const b = dispatcher.via(proxy, "b.example")
      assert.strictEqual(dispatcher.via(proxy, "a.example"), a) // reused, and now the most recent
      dispatcher.via(proxy, "c.example") // one name too many: b, the least recently used, goes
      assert.deepStrictEqual(
        [...dispatcher.named.keys()].map((key) => key.split("\u0000")[2]),
        ["a.example", "c.example"]
      )
      assert.isTrue(dispatcher.retiring.has(b))
      yield* Effect.promise(() => dispatcher.close())
      assert.strictEqual(dispatcher.retiring.size, 0)
      const closed = (agent: object) => (agent as { readonly closed: boolean }).closed
      assert.isTrue(closed(b), "the evicted agent is closed")
      assert.isTrue(closed(a) && closed(dispatcher.direct))
    })
  )

  it("adds the origin's Host to every form of headers undici takes, unless one is there", () => {
    assert.deepStrictEqual(withHost(undefined, "a.example:80"), { host: "a.example:80" })
    assert.deepStrictEqual(withHost({ accept: "*/*" }, "a.example"), { accept: "*/*", host: "a.example" })
    assert.deepStrictEqual(withHost(["Host", "b.example"], "a.example"), ["Host", "b.example"])
    const iterable = new Map<string, string | Array<string>>([
      ["accept", "*/*"],
      ["x-tag", ["1", "2"]]
    ])
    assert.deepStrictEqual(withHost(iterable, "a.example"), [
      "accept",
      "*/*",
      "x-tag",
      "1",
      "x-tag",
      "2",
      "host",
      "a.example"
    ])
  })
})
