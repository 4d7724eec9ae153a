// Chaos across both packages: `Fanout.pipelineSettled` fetches from a fault server and hands
// each body to a stage on worker threads, where some tasks are hostile (throwing every kind of
// value, exiting the thread); streams run to their end, are cut short by `take`, interrupted,
// or lose their executor mid-batch. Invariants, not timings: the stream never fails or dies
// for an item; every item ends at most once (exactly once when the stream runs to its end)
// with its fetch's typed failure or its stage's outcome; no socket, thread or fiber outlives its
// round; the heap after GC returns to within 10% of its size after a warm-up round.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Retry } from "@volley/core"
import { NodeBlocking, NodeHttpClient } from "@volley/node"
import { Cause, Effect, Exit, Fiber, Layer, Metric, Result, Scope, Stream } from "effect"
import type { HttpClientError } from "effect/http"
import { type FaultServer, faultServer } from "../support/faultServer.ts"
import { fiberCounter } from "../support/fibers.ts"
import {
  allSocketsClosed,
  announce,
  at,
  heapAfterGc,
  nothingOutlived,
  osThreads,
  type Random,
  random,
  rounds,
  watchingProcess
} from "./chaos.ts"
import { category, type Failure, judgeError, judgeValue, runSpec, type Spec, taskSpec } from "./tasks.ts"

announce("test/chaos/pipeline.test.ts")

const ROUNDS = 6
const ROUNDS_MILLIS = 5_000

type Fetch = "ok" | "404" | "reset" | "truncated"
type Ending = "join" | "take" | "interrupt" | "close-pool"

interface Round {
  readonly items: ReadonlyArray<{ readonly fetch: Fetch; readonly spec: Spec }>
  readonly concurrency: number
  readonly stageConcurrency: number
  readonly ending: Ending
}

const plan = (rng: Random): Round => ({
  items: Array.from({ length: rng.int(10, 24) }, () => ({
    fetch: rng.chance(0.7) ? "ok" : rng.pick(["404", "reset", "truncated"] as const),
    spec: taskSpec(rng, 0.35, false)
  })),
  concurrency: rng.int(2, 8),
  stageConcurrency: rng.int(1, 4),
  ending: rng.pick(["join", "join", "take", "interrupt", "close-pool"] as const)
})

const urlOf = (server: FaultServer, fetch: Fetch, i: number) => {
  switch (fetch) {
    case "ok":
      return `${server.url}/index?i=${i}`
    case "404":
      return `${server.url}/status?code=404`
    case "reset":
      return `${server.url}/reset`
    case "truncated":
      return `${server.url}/truncated`
  }
}

/** The failures of a fetch, as far as judging them goes. */
interface FetchError {
  readonly _tag: string
  readonly reason?: { readonly _tag: string }
}

/** Why a fetch failure is not one `fetch` may end with, or undefined when it is. */
const judgeFetch = (fetch: Fetch, error: FetchError): string | undefined => {
  const reason = error._tag === "HttpClientError" ? error.reason?._tag : undefined
  switch (fetch) {
    case "ok":
      return `a healthy fetch failed with ${error._tag}${reason === undefined ? "" : `/${reason}`}`
    case "404":
      return reason === "StatusCodeError" ? undefined : `expected a 404, got ${error._tag}`
    case "reset":
    case "truncated":
      return reason === "TransportError" || reason === "DecodeError" ? undefined : `expected a transport failure`
  }
}

const fetchTags = new Set([
  "HttpClientError",
  "DeadlineExceeded",
  "RetryAfterTooLong",
  "TimeoutError",
  "ItemInterrupted"
])

const tally = new Map<string, number>()
const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1)

const round = (index: number, rng: Random, server: FaultServer, threadsBefore: number | undefined) =>
  Effect.gen(function* () {
    const { items, concurrency, stageConcurrency, ending } = plan(rng)
    const where = (what: string) =>
      at(`round ${index} (${ending}, concurrency ${concurrency}, stage ${stageConcurrency}): ${what}`)
    const name = `chaos-pipeline-${index}`
    const fibers = fiberCounter()
    const clientScope = yield* Scope.make()
    const poolScope = yield* Scope.make()
    const settled = items.map((): Array<Result.Result<unknown, unknown>> => [])
    const urls = items.map(({ fetch }, i) => urlOf(server, fetch, i))
    let closed = false

    const { result, processErrors } = yield* watchingProcess(
      Effect.gen(function* () {
        const client = yield* Layer.buildWithScope(
          Layer.merge(
            NodeHttpClient.layer({ headersTimeout: "1 second", bodyTimeout: "1 second" }),
            Retry.layer({ retries: 1, baseDelay: "5 millis" })
          ),
          clientScope
        )
        const pool = yield* Layer.buildWithScope(
          NodeBlocking.layer({
            name,
            maxWorkers: 2,
            shutdown: "cancel",
            timeout: "5 seconds",
            gracePeriod: "100 millis",
            crashLoop: { deaths: 50, cooldown: "300 millis" }
          }),
          poolScope
        )
        const all = Fanout.pipelineSettled<unknown, Failure, never, string, HttpClientError.HttpClientError>(
          urls,
          (item) => runSpec(items[item.index]!.spec).pipe(Effect.provideContext(pool)),
          { concurrency, stageConcurrency, read: (response) => response.text }
        )
        const stream = ending === "take" ? Stream.take(all, rng.int(1, items.length)) : all
        const fiber = yield* stream.pipe(
          Stream.runForEach((item) => Effect.sync(() => settled[item.index]?.push(item.result))),
          Effect.provideContext(client),
          Effect.forkChild
        )
        if (ending === "interrupt" || ending === "close-pool") {
          yield* Effect.sleep(rng.int(50, 1500))
          if (ending === "interrupt") {
            yield* Fiber.interrupt(fiber)
          } else {
            closed = true
            yield* Scope.close(poolScope, Exit.void)
          }
        }
        return yield* Fiber.await(fiber)
      }).pipe(Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service))
    )

    assert.deepStrictEqual(processErrors, [], where("the main process saw no uncaught error"))
    const streamExit = result
    const interrupted = Exit.isFailure(streamExit) && Cause.hasInterruptsOnly(streamExit.cause)
    assert.isTrue(
      Exit.isSuccess(streamExit) || (interrupted && ending === "interrupt"),
      where(`the stream ended for an item: ${Exit.isFailure(streamExit) ? Cause.pretty(streamExit.cause) : ""}`)
    )
    const complete = Exit.isSuccess(streamExit) && ending !== "take"
    items.forEach(({ fetch, spec }, i) => {
      const ended = settled[i] ?? []
      const what = `item ${i} (${fetch}, ${JSON.stringify(spec)})`
      if (complete) assert.strictEqual(ended.length, 1, where(`${what} ended exactly once`))
      else assert.isAtMost(ended.length, 1, where(`${what} ended at most once`))
      const outcome = ended[0]
      if (outcome === undefined) return
      let verdict: string | undefined
      if (Result.isSuccess(outcome)) {
        count(`${category(spec)} -> success`)
        verdict = fetch === "ok" ? judgeValue(spec, outcome.success) : `a failed fetch (${fetch}) reached the stage`
      } else {
        const error = outcome.failure as
          | Failure
          | { readonly _tag: string; readonly reason?: { readonly _tag: string } }
        if (fetchTags.has(error._tag)) {
          count(`fetch ${fetch} -> ${error._tag}`)
          verdict = judgeFetch(fetch, error as FetchError)
        } else {
          const failure = error as Failure
          count(
            `${category(spec)} -> ${failure._tag === "WorkerDiedError" ? `WorkerDiedError(${failure.reason})` : failure._tag}`
          )
          verdict =
            fetch === "ok"
              ? judgeError(spec, failure, { interrupt: false, shutDown: closed })
              : `a failed fetch (${fetch}) reached the stage`
        }
      }
      assert.isUndefined(verdict, where(`${what}: ${verdict}`))
    })

    if (!closed) yield* Scope.close(poolScope, Exit.void)
    yield* Effect.promise(() => server.noneInFlight()).pipe(Effect.timeout("5 seconds"))
    yield* Scope.close(clientScope, Exit.void)
    yield* allSocketsClosed([server], where)
    yield* nothingOutlived(fibers, threadsBefore, where)
  })

describe("chaos: Fanout.pipelineSettled on worker threads", () => {
  it.live(
    "fault server, hostile stages, take, interrupts and a closed executor: every item ends once, typed; nothing outlives its round",
    () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const threads = osThreads()
        yield* round(-1, random("pipeline warm-up"), server, undefined)
        const threadsBefore = osThreads()
        const heapBefore = yield* heapAfterGc
        const took = yield* rounds(ROUNDS, ROUNDS_MILLIS, (i) =>
          round(i, random(`pipeline ${i}`), server, threadsBefore)
        )
        const heapAfter = yield* heapAfterGc
        const outcomes = [...tally]
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([key, n]) => `${key} ${n}`)
          .join(", ")
        console.info(
          `[chaos] pipeline: ${took.length} rounds (${took.join(", ")} ms) + warm-up; ${server.requests()} requests; outcomes: ${outcomes}; threads ${threads} -> ${threadsBefore}; heap ${mb(heapBefore)} -> ${mb(heapAfter)} MB`
        )
        assert.isAtMost(heapAfter, heapBefore * 1.1, at("heap after GC within 10% of its size after the warm-up"))
      }).pipe(Effect.scoped),
    { timeout: 90_000 }
  )
})

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
