import { realpathSync } from "node:fs"
import { createRequire } from "node:module"
import { resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { isMainThread } from "node:worker_threads"

// The program's entry module, as a real path (undefined in a thread or a REPL). A task defined in
// it cannot run on a thread: importing the entry module re-runs the whole program there, which
// starts its own pool, and so on.
const entry = (() => {
  const argv1 = process.argv[1]
  if (!isMainThread || argv1 === undefined) return undefined
  try {
    // Resolved as Node resolves the entry: `node main` is main.js, `node .` is package.json's main.
    return realpathSync(createRequire(import.meta.url).resolve(resolve(argv1)))
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
        "(starting another pool, and so on); define it in a module of its own and import that from the entry module " +
        "(an isMainThread guard around the program is not checked for, so it does not lift this)"
    : undefined
}
