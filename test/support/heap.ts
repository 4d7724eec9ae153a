// The heap in use after full collections, for tests that bound what a long run leaves behind.
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

// vitest's workers do not start with --expose-gc: turn the flag on and take `gc` from a fresh context.
setFlagsFromString("--expose-gc")
const gc = runInNewContext("gc") as () => void

/** `process.memoryUsage().heapUsed` after two full collections. */
export const heapAfterGc = (): number => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}
