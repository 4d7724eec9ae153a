// Counts fibers through Effect's fiber runtime metrics hook: the tests that check that nothing
// outlives a batch (the chaos rounds, the cancellation tests).
import type { Metric } from "effect"

/**
 * Counts the fibers started under it, through Effect's fiber runtime metrics hook: provide
 * `service` as `Metric.FiberRuntimeMetrics` and every fiber forked below reports its start and end.
 */
export const fiberCounter = () => {
  let active = 0
  let started = 0
  const service: Metric.FiberRuntimeMetricsService = {
    recordFiberStart: () => {
      active++
      started++
    },
    recordFiberEnd: () => {
      active--
    }
  }
  return { service, active: () => active, started: () => started }
}
