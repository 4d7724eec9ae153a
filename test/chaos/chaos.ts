// Shared machinery of the chaos suite: the seeded random source, and the invariants every
// scenario checks (fibers, OS threads, heap after GC, the main process's own error events).
//
// Every random choice comes from `random(label)`, a PRNG derived from one 32-bit seed and the
// label of the scenario, so a run is replayed (choices, not timings) with the seed it printed:
//
//   VOLLEY_CHAOS_SEED=1234 pnpm test:unit test/chaos

import { readFileSync } from "node:fs"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { assert } from "@effect/vitest"
import { Effect } from "effect"
import type { FaultServer } from "../support/faultServer.ts"
import type { fiberCounter } from "../support/fibers.ts"

const parseSeed = (text: string | undefined): number => {
  if (text === undefined || text.trim() === "") return (Math.random() * 2 ** 32) >>> 0
  const n = Number(text)
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`VOLLEY_CHAOS_SEED must be an integer >= 0, got ${text}`)
  return n >>> 0
}

/** The run's seed: `VOLLEY_CHAOS_SEED`, else a fresh one (printed by {@link announce}). */
export const seed = parseSeed(process.env.VOLLEY_CHAOS_SEED)

/** Prints the seed and how to replay it; call once per file. */
export const announce = (file: string): void => {
  console.info(`[chaos] ${file}: seed ${seed} (replay: VOLLEY_CHAOS_SEED=${seed} pnpm test:unit test/chaos)`)
}

/** A deterministic random source (mulberry32). */
export interface Random {
  /** In [0, 1). */
  readonly next: () => number
  /** An integer in [min, max]. */
  readonly int: (min: number, max: number) => number
  readonly chance: (p: number) => boolean
  readonly pick: <A>(items: ReadonlyArray<A>) => A
}

/** The random source of one scenario: the same seed and label always give the same sequence. */
export const random = (label: string): Random => {
  let state = seed
  for (let i = 0; i < label.length; i++) state = Math.imul(state ^ label.charCodeAt(i), 0x9e3779b1) >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  return {
    next,
    int,
    chance: (p) => next() < p,
    pick: (items) => {
      if (items.length === 0) throw new Error("pick from an empty list")
      return items[int(0, items.length - 1)] as (typeof items)[number]
    }
  }
}

/** A message suffix naming the seed, for assertions. */
export const at = (where: string) => `${where} (VOLLEY_CHAOS_SEED=${seed})`

/** Threads of this process as the kernel counts them (Linux), or undefined elsewhere. */
export const osThreads = (): number | undefined => {
  try {
    const match = /^Threads:\s+(\d+)$/m.exec(readFileSync("/proc/self/status", "utf8"))
    return match?.[1] === undefined ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/**
 * Polls `check` every 10 ms (real time) until it holds or `millis` pass; returns whether it
 * held. Bounded: the caller asserts on the result.
 */
export const eventually = (check: () => boolean, millis = 5000): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    const until = performance.now() + millis
    while (!check()) {
      if (performance.now() > until) return false
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return true
  })

/** Every socket the servers accepted is closed, within 5 s. */
export const allSocketsClosed = (
  servers: ReadonlyArray<FaultServer>,
  where: (what: string) => string
): Effect.Effect<void> =>
  Effect.gen(function* () {
    for (const server of servers) {
      const closed = yield* Effect.promise(() => server.allSocketsClosed()).pipe(Effect.timeoutOption("5 seconds"))
      assert.isTrue(closed._tag === "Some", where(`every socket closed (${server.openSockets()} open)`))
    }
  })

/** The end of a round: no fiber counted by `fibers`, and no thread beyond `threadsBefore`, outlived it. */
export const nothingOutlived = (
  fibers: ReturnType<typeof fiberCounter>,
  threadsBefore: number | undefined,
  where: (what: string) => string
): Effect.Effect<void> =>
  Effect.gen(function* () {
    assert.isTrue(
      yield* eventually(() => fibers.active() === 0),
      where(`no fiber outlived the round (${fibers.active()} of ${fibers.started()} still running)`)
    )
    if (threadsBefore === undefined) return
    const gone = yield* eventually(() => (osThreads() ?? 0) <= threadsBefore)
    assert.isTrue(gone, where(`no thread outlived the round (${osThreads()} threads, ${threadsBefore} before)`))
  })

// vitest's workers do not start with --expose-gc: turn the flag on and take `gc` from a fresh context.
setFlagsFromString("--expose-gc")
const gc = runInNewContext("gc") as () => void

/** Heap in use after full collections (with turns of the event loop between them for finalizers). */
export const heapAfterGc: Effect.Effect<number> = Effect.promise(async () => {
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return process.memoryUsage().heapUsed
})

/** Counts uncaught exceptions and unhandled rejections in this process while `effect` runs. */
export const watchingProcess = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const seen: Array<string> = []
    const onException = (error: unknown) => seen.push(`uncaughtException: ${String(error)}`)
    const onRejection = (reason: unknown) => seen.push(`unhandledRejection: ${String(reason)}`)
    process.on("uncaughtExceptionMonitor", onException)
    process.on("unhandledRejection", onRejection)
    const result = yield* effect.pipe(
      Effect.ensuring(
        Effect.sync(() => {
          process.off("uncaughtExceptionMonitor", onException)
          process.off("unhandledRejection", onRejection)
        })
      )
    )
    return { result, processErrors: seen }
  })

/**
 * Runs scenario rounds: a fixed count, and no new round once `millis` have passed. Returns the
 * wall time of each round, in ms, for the log.
 */
export const rounds = <E, R>(
  count: number,
  millis: number,
  round: (index: number) => Effect.Effect<void, E, R>
): Effect.Effect<Array<number>, E, R> =>
  Effect.gen(function* () {
    const until = performance.now() + millis
    const took: Array<number> = []
    while (took.length < count && (took.length === 0 || performance.now() < until)) {
      const start = performance.now()
      yield* round(took.length)
      took.push(Math.round(performance.now() - start))
    }
    return took
  })
