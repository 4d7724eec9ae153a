// Blocking tasks for the HTTP -> worker-thread pipeline test: gunzip, parse and hash a body,
// taking at least `minMillis` of CPU so the stage is the bottleneck.
import { createHash } from "node:crypto"
import { gunzipSync } from "node:zlib"
import { Blocking } from "@volley/core"
import { Schema } from "effect"

export const digest = Blocking.task({
  module: import.meta.url,
  name: "digest",
  payload: Schema.Struct({ body: Schema.Uint8Array, minMillis: Schema.Number }),
  success: Schema.Struct({ i: Schema.Number, items: Schema.Number, sha256: Schema.String }),
  handler: ({ body, minMillis }) => {
    const until = performance.now() + minMillis
    const doc = JSON.parse(gunzipSync(body).toString("utf8")) as { i: number; items: ReadonlyArray<unknown> }
    const sha256 = createHash("sha256").update(body).digest("hex")
    while (performance.now() < until) {
      // a slow CPU stage, on purpose
    }
    return { i: doc.i, items: doc.items.length, sha256 }
  }
})
