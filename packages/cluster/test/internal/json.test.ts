import { assert, describe, it } from "vitest"
import { notJson } from "../../src/internal/json.ts"

describe("notJson", () => {
  it("accepts what JSON gives back unchanged", () => {
    assert.isUndefined(notJson({ a: [1, "b", true, null, { c: -0.5 }], d: Object.create(null), optional: undefined }))
  })

  it("names the first value JSON would change", () => {
    assert.strictEqual(notJson({ a: [1, new Uint8Array(1)] }), "payload.a[1] (Uint8Array)")
    assert.strictEqual(notJson({ when: new Date(0) }), "payload.when (Date)")
    assert.strictEqual(notJson([Number.NaN]), "payload[0] (NaN)")
    assert.strictEqual(notJson({ n: 1n }), "payload.n (bigint)")
    assert.strictEqual(notJson([undefined]), "payload[0] (undefined)")
    assert.strictEqual(notJson(new Map()), "payload (Map)")
  })

  it("names a circular reference instead of recursing until the stack overflows", () => {
    const loop: Record<string, unknown> = { name: "loop" }
    loop.self = loop
    assert.strictEqual(notJson(loop), "payload.self (circular)")
    const list: Array<unknown> = [1]
    list.push({ back: list })
    assert.strictEqual(notJson(list, "result"), "result[1].back (circular)")
  })

  it("accepts an object reached twice by different paths: JSON stores it twice, no cycle", () => {
    const shared = { n: 1 }
    assert.isUndefined(notJson({ a: shared, b: [shared, shared] }))
  })
})
