// Worker module for piscina and tinypool (named exports, picked with `{ name }`).
export { noop, spin } from "./work.ts"
