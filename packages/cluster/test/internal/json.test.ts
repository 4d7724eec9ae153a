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
})
