// How much parallelism the machine gives right now: the same CPU work on 1 bare thread vs split
// over 2. On a shared 2-vCPU box this is often well under 2x, which caps every pool's speed-up.
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads"
import { spin } from "./work.ts"

export const measureCapacity = async (rounds: number, tasks: number): Promise<number> => {
  const run = async (threads: number) => {
    const start = performance.now()
    await Promise.all(
      Array.from(
        { length: threads },
        () =>
          new Promise((resolve) =>
            new Worker(new URL(import.meta.url), { workerData: { rounds, count: tasks / threads } }).on("exit", resolve)
          )
      )
    )
    return performance.now() - start
  }
  return (await run(1)) / (await run(2))
}

if (!isMainThread && parentPort !== null) {
  const { rounds, count } = workerData as { rounds: number; count: number }
  for (let i = 0; i < count; i++) spin(rounds)
  parentPort.close()
}
