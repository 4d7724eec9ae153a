// The CPU stage of examples/pipeline.ts, in a module of its own: pool threads import a task's
// module to run it, and importing the entry module would run the whole program again in each.
import { createHash } from "node:crypto"
import { gunzipSync } from "node:zlib"
import { Blocking } from "@volley/core"
import { Schema } from "effect"

export const digest = Blocking.task({
  module: import.meta.url,
  name: "digest",
  payload: Schema.Uint8Array,
  success: Schema.Struct({ id: Schema.Number, records: Schema.Number, sha256: Schema.String }),
  transfer: { payload: (bytes) => [bytes.buffer as ArrayBuffer] },
  handler: (gzipped) => {
    const json = gunzipSync(gzipped)
    const doc = JSON.parse(json.toString("utf8")) as { id: number; records: ReadonlyArray<unknown> }
    return { id: doc.id, records: doc.records.length, sha256: createHash("sha256").update(json).digest("hex") }
  }
})
