// The workloads as volley tasks.
import { Blocking } from "@volley/core"
import { Schema } from "effect"
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
