// undici takes a request out of its queue, and gives up a connection attempt no request waits for
// any more, only through a hook its own signal-taking APIs put in the dispatch options under a
// symbol it does not export (`kQueuedAbort`, undici 8.13). Without it, a request interrupted while
// its connection was being opened stayed queued, and the attempt (a TLS handshake an origin never
// answers) held its socket open until `connectTimeout`. The symbol is read from the undici that
// platform-node's `Undici` module is, so it is that instance's; an undici without it leaves the
// request to be dropped when its turn comes, as before.
import { createRequire } from "node:module"

const find = (): symbol | undefined => {
  try {
    const require = createRequire(import.meta.resolve("@effect/platform-node/Undici"))
    const symbols = require("undici/lib/core/symbols.js") as { readonly kQueuedAbort?: unknown }
    return typeof symbols.kQueuedAbort === "symbol" ? symbols.kQueuedAbort : undefined
  } catch {
    return undefined
  }
}

/** The dispatch option under which undici calls back with a queued request's cancel function, if it has one. */
export const QUEUED_ABORT: symbol | undefined = find()
