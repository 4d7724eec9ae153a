import { realpathSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { isMainThread } from "node:worker_threads"

// The program's entry module, as a real path (undefined in a thread or a REPL). A task defined in
// it cannot run on a thread: importing the entry module re-runs the whole program there, which
// starts its own pool, and so on.
const entry = (() => {
  const argv1 = process.argv[1]
  if (!isMainThread || argv1 === undefined) return undefined
  try {
    return realpathSync(argv1)
  } catch {
    return undefined
  }
})()

/** Why tasks of `moduleUrl` cannot run on a thread, or undefined when they can. */
export const entryModuleRefusal = (moduleUrl: string): string | undefined => {
  if (entry === undefined || !moduleUrl.startsWith("file:")) return undefined
  let path: string
  try {
    path = realpathSync(fileURLToPath(moduleUrl))
  } catch {
    return undefined
  }
  return path === entry
    ? "the task is defined in the program's entry module, which a pool thread would run again from the top " +
        "(starting another pool, and so on); define it in a module of its own and import that from the entry module"
    : undefined
}
