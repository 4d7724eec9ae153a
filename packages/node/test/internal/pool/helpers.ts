// Helpers shared by the pool's tests: a pool per test, real-time waits (threads run in real time,
// the pool's timers on the TestClock) and `P.block` flags.
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect, type Fiber, Metric, type Scope } from "effect"

export const withPool =
  (options: NodeBlocking.Options) =>
  <A, E>(effect: Effect.Effect<A, E, Blocking.BlockingExecutor | Scope.Scope>) =>
    Effect.scoped(
      Effect.flatMap(NodeBlocking.make(options), (executor) =>
        Effect.provideService(effect, Blocking.BlockingExecutor, executor)
      )
    )

export const realSleep = (millis: number) => Effect.promise(() => new Promise((resolve) => setTimeout(resolve, millis)))

/** One turn of the event loop (no time passes): forked callers have submitted and the pool has dispatched. */
export const eventLoopTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/** True once `fiber` has finished, polled in real time for at most 2 s. */
export const settles = (fiber: Fiber.Fiber<unknown, unknown>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200 && fiber.pollUnsafe() === undefined; i++) yield* realSleep(10)
    return fiber.pollUnsafe() !== undefined
  })

/** True once `done()` holds, polled in real time for at most 5 s. */
export const eventually = (done: () => boolean) =>
  Effect.gen(function* () {
    for (let i = 0; i < 500 && !done(); i++) yield* realSleep(10)
    return done()
  })

/** Flags of a `P.block` task, released when the scope closes so a failing test leaves no thread blocked. */
export const blockFlags = Effect.gen(function* () {
  const flags = new Int32Array(new SharedArrayBuffer(16))
  yield* Effect.addFinalizer(() => Effect.sync(() => release(flags)))
  return flags
})

/** Lets a `P.block` task return. */
export const release = (flags: Int32Array) => {
  Atomics.store(flags, 1, 1)
  Atomics.notify(flags, 1)
}

/** How many samples a named pool has recorded in a histogram or counter. */
export const samples = (
  metric: Metric.Metric<number, { readonly count: number | bigint }>,
  pool: string
): Effect.Effect<number> =>
  Effect.map(Metric.value(Metric.withAttributes(metric, { pool }) as typeof metric), (state) => Number(state.count))
