// Thread of the minimal pool: runs one workload per message and posts the result back.
import { parentPort } from "node:worker_threads"
import * as Work from "./work.ts"

parentPort!.on("message", ([kind, n]: [string, number]) => {
  parentPort!.postMessage(kind === "noop" ? Work.noop(n) : Work.spin(n))
})
