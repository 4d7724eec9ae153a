import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Metric } from "effect"
import { Durations, MAX_IDLE_METERS, Meters, metrics } from "../../../src/internal/http/metrics.ts"

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

describe("Meters", () => {
  it.effect("keeps a meter for no more than the last idle origins, whichever origin was asked for last", () =>
    Effect.gen(function* () {
      const registry: Metric.MetricRegistry = new Map()
      const meters = new Meters(Context.make(Metric.MetricRegistry, registry))
      // A crawler's batches: 300 origins sent at once, the last one sent answering first. The
      // last origin asked for was kept when it went idle first, one more meter per batch, for good.
      let n = 0
      for (let batch = 0; batch < 20; batch++) {
        const sent = Array.from({ length: 300 }, () => {
          const meter = meters.of(`http://o${n++}.test`)
          return { meter, started: meter.start() }
        })
        for (const { meter, started } of [sent.at(-1)!, ...sent.slice(0, -1)]) meter.end(started, 200, 0)
      }
      assert.isAtMost(meters.byOrigin.size, MAX_IDLE_METERS)
      // Counted as before: a batch's last origin, forgotten, counts on with its next request.
      const last = "http://o5999.test"
      const meter = meters.of(last)
      meter.end(meter.start(), 200, 0)
      const read = <A>(metric: Metric.Metric<number, A>, attributes: Record<string, string>) =>
        Metric.value(Metric.withAttributes(metric, attributes)).pipe(
          Effect.provideService(Metric.MetricRegistry, registry)
        )
      assert.deepStrictEqual(yield* read(metrics.requests, { origin: last, status_class: "2xx" }), {
        count: 2,
        incremental: false
      })
      assert.strictEqual((yield* read(metrics.inFlight, { origin: last })).value, 0)
    })
  )
})
