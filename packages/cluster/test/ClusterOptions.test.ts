// Options of the cluster's layers and streams are checked before anything reaches the cluster or
// the database: a bad one fails typed, with InvalidOptionsError, as the signatures say (not a
// defect while the layer is built, nor an exception thrown by the call). No database is needed:
// the services given here fail the test if they are ever used.
import { assert, describe, it } from "@effect/vitest"
import { ClusterBlocking, ClusterFanout } from "@volley/cluster"
import { Blocking, Options as Validate } from "@volley/core"
import { Cause, type Duration, Effect, Exit, Layer, Schema, Stream } from "effect"
import { MessageStorage, Sharding } from "effect/cluster"
import { SqlClient } from "effect/sql"

const untouchable = (name: string): never =>
  new Proxy({} as never, {
    get: (_, key) => {
      throw new Error(`${name}.${String(key)} was used`)
    }
  })

const services = Layer.mergeAll(
  Layer.succeed(Sharding.Sharding, untouchable("Sharding")),
  Layer.succeed(MessageStorage.MessageStorage, untouchable("MessageStorage")),
  Layer.succeed(Blocking.BlockingExecutor, untouchable("BlockingExecutor")),
  Layer.succeed(SqlClient.SqlClient, untouchable("SqlClient"))
)

/** The option an effect's failure names, or what it did instead. */
const invalidOption = <A, E>(effect: Effect.Effect<A, E, never>) =>
  Effect.map(Effect.exit(Effect.suspend(() => effect)), (exit): string => {
    if (Exit.isSuccess(exit)) return "succeeded"
    if (Cause.hasDies(exit.cause)) return `died: ${Cause.squash(exit.cause)}`
    const error = Cause.squash(exit.cause)
    return error instanceof Validate.InvalidOptionsError ? error.option : `failed: ${error}`
  })

const build = <A, E, R extends Layer.Success<typeof services>>(layer: Layer.Layer<A, E, R>) =>
  Effect.scoped(Layer.build(Layer.provide(layer, services)))

// Thrown by the call itself (before this fix), it must still count as what the call did.
const called = <A, E, R>(make: () => Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    try {
      return make()
    } catch (thrown) {
      return Effect.die(thrown)
    }
  })

describe("cluster options", () => {
  describe("ClusterBlocking.layer", () => {
    for (const buckets of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      it.effect(`fails with InvalidOptionsError for buckets ${buckets}`, () =>
        Effect.map(invalidOption(build(ClusterBlocking.layer({ buckets }))), (option) =>
          assert.strictEqual(option, "buckets")
        )
      )
    }
  })

  describe("ClusterBlocking.layerRunner", () => {
    for (const retention of ["banana", "-1 hour", -1, Number.NaN, "NaN seconds"] as ReadonlyArray<Duration.Input>) {
      it.effect(`fails with InvalidOptionsError for retention ${String(retention)}, when built`, () =>
        Effect.map(
          invalidOption(called(() => build(ClusterBlocking.layerRunner({ tasks: [], retention })))),
          (option) => assert.strictEqual(option, "retention")
        )
      )
    }
  })

  describe("ClusterBlocking.layerRunner tasks", () => {
    const moduleless = Blocking.task({
      name: "moduleless",
      payload: Schema.Number,
      success: Schema.Number,
      handler: (n) => n
    })
    it.effect("fails with InvalidOptionsError for a task without a module URL, when built", () =>
      Effect.map(invalidOption(build(ClusterBlocking.layerRunner({ tasks: [moduleless] }))), (option) =>
        assert.strictEqual(option, "tasks")
      )
    )
    it.effect("skips entries that are not tasks (a tasks module's other exports)", () =>
      Effect.map(
        invalidOption(build(ClusterBlocking.layerRunner({ tasks: ["square", { name: "square" }] }))),
        (option) => assert.notStrictEqual(option, "tasks")
      )
    )
  })

  describe("ClusterFanout.watch", () => {
    for (const interval of [0, -1, "NaN seconds", Number.NaN] as ReadonlyArray<Duration.Input>) {
      it.effect(`fails the stream with InvalidOptionsError for interval ${String(interval)}`, () =>
        Effect.map(
          invalidOption(
            called(() => Stream.runDrain(ClusterFanout.watch("job", { interval }))).pipe(Effect.provide(services))
          ),
          (option) => assert.strictEqual(option, "interval")
        )
      )
    }
  })

  describe("ClusterFanout.wait", () => {
    it.effect("fails with InvalidOptionsError for a timeout that is not a positive duration", () =>
      Effect.map(
        invalidOption(
          called(() => ClusterFanout.wait("job", { timeout: "NaN seconds" as Duration.Input })).pipe(
            Effect.provide(services)
          )
        ),
        (option) => assert.strictEqual(option, "timeout")
      )
    )
    it.effect("fails with InvalidOptionsError for an interval that is not a positive duration", () =>
      Effect.map(
        invalidOption(called(() => ClusterFanout.wait("job", { interval: 0 })).pipe(Effect.provide(services))),
        (option) => assert.strictEqual(option, "interval")
      )
    )
  })
})
