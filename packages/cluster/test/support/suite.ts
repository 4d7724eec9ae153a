import type { ClusterRunner } from "@volley/cluster"
import type { Effect } from "effect"
import { afterAll, beforeAll } from "vitest"
import { startCluster, type TestCluster } from "./cluster.ts"
import { type Origin, startOrigins } from "./origins.ts"

/** A test file's cluster and origins, started before its tests and stopped after them. */
export interface Suite {
  readonly cluster: TestCluster
  readonly origins: ReadonlyArray<Origin>
  /** Runs an effect on the cluster's client. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, ClusterRunner.ClusterRunnerServices>) => Promise<A>
}

/** Registers the file's `beforeAll`/`afterAll`; read the fields inside tests, once they have started. */
export const clusterSuite = (
  cluster: Parameters<typeof startCluster>[0],
  origins: { readonly count: number; readonly delayMillis: number }
): Suite => {
  let started: TestCluster | undefined
  let servers: ReadonlyArray<Origin> = []
  beforeAll(async () => {
    ;[started, servers] = await Promise.all([startCluster(cluster), startOrigins(origins.count, origins.delayMillis)])
  }, 90_000)
  afterAll(async () => {
    await started?.dispose()
    await Promise.all(servers.map((origin) => origin.close()))
  }, 60_000)
  return {
    get cluster() {
      if (started === undefined) throw new Error("the cluster is read before beforeAll started it")
      return started
    },
    get origins() {
      return servers
    },
    run: (effect) => started!.client.runPromise(effect)
  }
}
