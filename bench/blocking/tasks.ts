// The workloads as volley tasks. Every pool thread imports this module: effect/Schema and
// @volley/core/Blocking, not the barrels (every module of effect, HTTP included), keep that short.
import * as Blocking from "@volley/core/Blocking"
import * as Schema from "effect/Schema"
import * as Work from "./work.ts"

export const noop = Blocking.task({
  module: import.meta.url,
  name: "noop",
  payload: Schema.Number,
  success: Schema.Number,
  handler: Work.noop
})

export const spin = Blocking.task({
  module: import.meta.url,
  name: "spin",
  payload: Schema.Number,
  success: Schema.Number,
  handler: Work.spin
})
