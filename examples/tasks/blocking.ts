// The tasks of examples/blocking-executor.ts. They live in a module of their own because pool
// threads import a task's module to run it: importing the entry module would run the whole
// program again in every thread, so NodeBlocking refuses tasks defined there.
import { execFileSync } from "node:child_process"
import { scryptSync } from "node:crypto"
import { gzipSync } from "node:zlib"
import { Blocking } from "@volley/core"
import { Schema } from "effect"

export const hash = Blocking.task({
  module: import.meta.url,
  name: "hash",
  payload: Schema.String,
  success: Schema.String,
  handler: (password) =>
    scryptSync(password, "volley-salt", 32, { N: 2 ** 15, maxmem: 64 * 1024 * 1024 }).toString("hex")
})

export const gzip = Blocking.task({
  module: import.meta.url,
  name: "gzip",
  payload: Schema.Uint8Array,
  success: Schema.Number,
  transfer: { payload: (bytes) => [bytes.buffer as ArrayBuffer] },
  handler: (bytes) => gzipSync(bytes).byteLength
})

// A synchronous HTTP client: curl, which blocks its thread until the answer (or 2 s) is in.
export const curl = Blocking.task({
  module: import.meta.url,
  name: "curl",
  payload: Schema.String,
  success: Schema.String,
  handler: (url) =>
    execFileSync("curl", ["-sS", "--max-time", "2", url], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] })
})
