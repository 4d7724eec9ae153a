/**
 * @since 0.1.0
 */

/**
 * Blocking work on a cluster: a `Blocking.BlockingExecutor` whose calls run on the runners'
 * worker-thread pools.
 *
 * @since 0.1.0
 */
export * as ClusterBlocking from "./ClusterBlocking.ts"

/**
 * Durable fan-out over a cluster of runners: jobs of HTTP requests stored in PostgreSQL, worked by
 * every runner, per-host bounds cluster-wide, one outcome per item.
 *
 * @since 0.1.0
 */
export * as ClusterFanout from "./ClusterFanout.ts"

/**
 * Runners and clients of a volley cluster on Effect's cluster and PostgreSQL.
 *
 * @since 0.1.0
 */
export * as ClusterRunner from "./ClusterRunner.ts"
