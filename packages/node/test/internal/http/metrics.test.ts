import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Metric } from "effect"
import { Durations, metrics } from "../../../src/internal/http/metrics.ts"

describe("Durations", () => {
  it.effect("holds what Effect's own histogram would, read through the metric", () =>
    Effect.gen(function* () {
      const values = [0, 0.25, 0.3, 1, 1.5, 7.9, 8, 64, 100, 1000, 65_536, 1e7, 3.2]
      // Effect's histogram with the same boundaries, in a registry of its own.
      const reference = Metric.histogram("reference", {
        boundaries: Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 })
      })
      const ours = Context.make(Metric.MetricRegistry, new Map())
      const durations = Durations.of(ours)
      for (const value of values) {
        durations.add(value)
        yield* Metric.update(reference, value)
      }
      const expected = yield* Metric.value(reference)
      const actual = yield* Metric.value(metrics.duration).pipe(
        Effect.provideService(Metric.MetricRegistry, Context.get(ours, Metric.MetricRegistry))
      )
      assert.deepStrictEqual(actual, expected)
      // One state per registry: a second client there shares it.
      assert.strictEqual(Durations.of(ours), durations)
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map()))
  )

  it.effect("one state per series: metric attributes in any order share it; a removed series starts again", () =>
    Effect.gen(function* () {
      const registry: Metric.MetricRegistry = new Map()
      const withAttributes = (attributes: Record<string, string>) =>
        Context.make(Metric.MetricRegistry, registry).pipe(Context.add(Metric.CurrentMetricAttributes, attributes))
      const first = Durations.of(withAttributes({ service: "a", env: "x" }))
      const second = Durations.of(withAttributes({ env: "x", service: "a" }))
      assert.strictEqual(second, first)
      first.add(1)
      const read = Metric.value(metrics.duration).pipe(
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(Metric.CurrentMetricAttributes, { service: "a", env: "x" })
      )
      assert.strictEqual((yield* read).count, 1)

      yield* Metric.remove(metrics.duration).pipe(
        Effect.provideService(Metric.MetricRegistry, registry),
        Effect.provideService(Metric.CurrentMetricAttributes, { service: "a", env: "x" })
      )
      first.ensureRegistered() // what the next publication of the client's counters does
      first.add(2)
      first.add(3)
      assert.strictEqual((yield* read).count, 2)
    })
  )
})
