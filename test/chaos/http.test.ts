// Chaos on the HTTP side: rounds of fan-out batches and `Http.*` calls against a fault server
// that resets, truncates, stalls and answers 429/503 with Retry-After, mixed at random with
// invalid requests, cancelled items, interrupted batches, deadlines and a client closed
// mid-batch. Invariants, not timings: every item ends exactly once, with a value or a typed
// failure (never a defect); the batch itself never fails for an item in the settled forms;
// a request that cannot be sent is never retried (the server sees exactly one request per
// valid item plus one per retry); no socket (counted by the server), fiber or thread outlives
// its round; the heap after GC returns to within 10% of its size after a warm-up round.
import { assert, describe, it } from "@effect/vitest"
import { Fanout, Http, Retry } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Metric, Result, Scope, Stream } from "effect"
import { type HttpClientError, HttpClientRequest } from "effect/http"
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

announce("test/chaos/http.test.ts")

const ROUNDS = 12
const KEEP_ALIVE_MILLIS = 1000
const ROUNDS_MILLIS = 8_000
const RETRIES = 2

type Kind =
  | { readonly _tag: "ok"; readonly delay: number; readonly size: number }
  | { readonly _tag: "flaky"; readonly status: 429 | 503; readonly fail: number; readonly retryAfter?: string }
  | { readonly _tag: "status"; readonly code: 404 | 500 }
  | { readonly _tag: "reset" }
  | { readonly _tag: "flaky-reset"; readonly fail: number }
  | { readonly _tag: "truncated" }
  | { readonly _tag: "slow-body"; readonly chunks: number }
  | { readonly _tag: "stall" }
  | { readonly _tag: "bad-header" }
  | { readonly _tag: "bad-scheme" }

interface Call {
  readonly kind: Kind
  readonly helper: "send" | "getText" | "postText"
}

interface Item {
  readonly kind: Kind
  /** Cancelled on its own (Fanout.cancellable) after this many ms. */
  readonly cancelAfter: number | undefined
}

type Form = "allSettled" | "streamSettled" | "all" | "stream-take"
type Ending = "join" | "interrupt-batch" | "close-client"

interface Round {
  readonly items: ReadonlyArray<Item>
  readonly form: Form
  readonly ending: Ending
  readonly concurrency: number
  /** Some items are cancelled on their own (Fanout.cancellable). */
  readonly cancels: boolean
  /** Hand the batch a generator rather than an array (no length known up front). */
  readonly generator: boolean
  /** Per-origin bound (every request goes to one origin), stream order and buffer. */
  readonly perHost: number | undefined
  readonly ordered: boolean
  readonly buffer: number | undefined
  readonly deadline: number | undefined
  /** Retry budget: off, or on with this window. */
  readonly budget: Duration.Duration | undefined
  /** Wait, with the client open, for its idle sockets to close by themselves. */
  readonly idleCheck: boolean
  /** Http.* calls made alongside the batch. */
  readonly calls: ReadonlyArray<Call>
}

const isInvalid = (kind: Kind) => kind._tag === "bad-header" || kind._tag === "bad-scheme"

const kindOf = (rng: Random): Kind => {
  const roll = rng.next()
  if (roll < 0.25) return { _tag: "ok", delay: rng.int(0, 30), size: rng.int(0, 4096) }
  if (roll < 0.45) {
    const retryAfter = rng.pick([undefined, undefined, "0", "0", "1", "30"])
    return {
      _tag: "flaky",
      status: rng.pick([429, 503] as const),
      fail: rng.int(1, RETRIES + 1),
      ...(retryAfter === undefined ? {} : { retryAfter })
    }
  }
  if (roll < 0.52) return { _tag: "status", code: rng.pick([404, 500] as const) }
  if (roll < 0.58) return { _tag: "reset" }
  if (roll < 0.66) return { _tag: "flaky-reset", fail: rng.int(1, RETRIES + 1) }
  if (roll < 0.72) return { _tag: "truncated" }
  if (roll < 0.8) return { _tag: "slow-body", chunks: rng.int(2, 6) }
  if (roll < 0.84) return { _tag: "stall" }
  // Never sent, so never retried (issue 10, defect 4).
  if (roll < 0.94) return rng.chance(0.5) ? { _tag: "bad-header" } : { _tag: "bad-scheme" }
  return { _tag: "ok", delay: 0, size: 2 }
}

const plan = (rng: Random): Round => {
  // Cancels in some rounds only: the others check the server's request count exactly.
  const cancels = rng.chance(0.4)
  const item = (): Item => {
    const kind = kindOf(rng)
    const cancel = cancels && (kind._tag === "stall" || rng.chance(0.2))
    return { kind, cancelAfter: cancel ? rng.int(0, 300) : undefined }
  }
  const ending = rng.pick(["join", "join", "join", "join", "interrupt-batch", "close-client"] as const)
  return {
    ending,
    cancels,
    items: Array.from({ length: rng.int(16, 48) }, item),
    form: rng.pick([
      "allSettled",
      "allSettled",
      "allSettled",
      "streamSettled",
      "streamSettled",
      "all",
      "stream-take"
    ] as const),
    // Huge: workers must follow the input, not the option (issue 10, defect 2).
    concurrency: rng.chance(0.15) ? 1e9 : rng.int(4, 32),
    generator: rng.chance(0.3),
    perHost: rng.chance(0.3) ? rng.int(1, 8) : undefined,
    ordered: rng.chance(0.3),
    buffer: rng.chance(0.3) ? rng.int(0, 8) : undefined,
    deadline: rng.chance(0.15) ? rng.int(200, 1500) : undefined,
    // Any window costs the same memory (issue 10, defect 6).
    budget: rng.chance(0.3) ? undefined : rng.pick([Duration.seconds(1), Duration.seconds(10), Duration.seconds(1e12)]),
    // keepAliveTimeout is an upper bound, whatever the server hints (issue 10, defect 5).
    idleCheck: ending === "join" && rng.chance(0.3),
    calls: Array.from({ length: rng.int(0, 8) }, () => ({
      kind: kindOf(rng),
      helper: rng.pick(["send", "getText", "postText"] as const)
    }))
  }
}

const pathOf = (kind: Kind, key: string): string => {
  switch (kind._tag) {
    case "ok":
      return `/ok?delay=${kind.delay}&size=${kind.size}`
    case "flaky": {
      const retryAfter = kind.retryAfter === undefined ? "" : `&retryAfter=${kind.retryAfter}`
      return `/flaky?key=${key}&fail=${kind.fail}&status=${kind.status}${retryAfter}`
    }
    case "status":
      return `/status?code=${kind.code}`
    case "reset":
      return "/reset"
    case "flaky-reset":
      return `/flaky-reset?key=${key}&fail=${kind.fail}`
    case "truncated":
      return "/truncated"
    case "slow-body":
      return `/slow-body?chunks=${kind.chunks}&interval=20`
    case "stall":
      return "/hang"
    case "bad-header":
    case "bad-scheme":
      return "/ok"
  }
}

const urlOf = (server: FaultServer, kind: Kind, key: string): string =>
  kind._tag === "bad-scheme"
    ? `ftp://${server.url.slice("http://".length)}${pathOf(kind, key)}`
    : `${server.url}${pathOf(kind, key)}`

const headersOf = (kind: Kind): Record<string, string> =>
  kind._tag === "bad-header" ? { "x-chaos": "a\r\nInjected: yes" } : {}

const requestOf = (server: FaultServer, kind: Kind, key: string): HttpClientRequest.HttpClientRequest =>
  HttpClientRequest.get(urlOf(server, kind, key), { headers: headersOf(kind) })

/** An `Http.*` call: the generic `send`, or a helper (POST is never retried). */
const callOf = (server: FaultServer, { kind, helper }: Call, key: string) => {
  const url = urlOf(server, kind, key)
  const headers = headersOf(kind)
  switch (helper) {
    case "send":
      return Http.send(requestOf(server, kind, key), (response) => response.text)
    case "getText":
      return Http.getText(url, { headers })
    case "postText":
      return Http.postText(url, "chaos", { headers })
  }
}

const itemTags = new Set([
  "HttpClientError",
  "DeadlineExceeded",
  "RetryAfterTooLong",
  "TimeoutError",
  "ItemInterrupted"
])

interface Allowed {
  readonly interrupt: boolean
  readonly deadline: boolean
  readonly closed: boolean
}

/** Why `error` is not a failure `kind` may end with, or undefined when it is. */
const judgeFailure = (kind: Kind, error: unknown, may: Allowed): string | undefined => {
  const tag = (error as { readonly _tag?: unknown })?._tag
  if (typeof tag !== "string" || !itemTags.has(tag)) return `untyped failure ${String(error)}`
  if (tag === "ItemInterrupted") return may.interrupt ? undefined : "ItemInterrupted, yet it was not cancelled"
  if (tag === "DeadlineExceeded") return may.deadline ? undefined : "DeadlineExceeded without a deadline"
  const reason = tag === "HttpClientError" ? (error as HttpClientError.HttpClientError).reason : undefined
  // A client closed mid-batch fails what it was running, and what it is then given (invalid
  // or not: a destroyed dispatcher refuses before it looks at the request).
  if (may.closed && (reason?._tag === "TransportError" || reason?._tag === "DecodeError")) return undefined
  if (isInvalid(kind)) {
    // It can never be sent: invalid input, not a transport failure to retry.
    return reason !== undefined && (reason._tag === "InvalidUrlError" || reason._tag === "EncodeError")
      ? undefined
      : `an invalid request failed with ${tag}${reason === undefined ? "" : `/${reason._tag}`}`
  }
  switch (kind._tag) {
    case "ok":
    case "slow-body":
      return `a healthy request failed with ${tag}${reason === undefined ? "" : `/${reason._tag}: ${reason.message}`}`
    case "flaky":
      // Too long: longer than maxRetryAfter, or (with a deadline) ending past it.
      if (tag === "RetryAfterTooLong") {
        return kind.retryAfter === "30" || (may.deadline && kind.retryAfter !== undefined)
          ? undefined
          : "RetryAfterTooLong for a short one"
      }
      return reason?._tag === "StatusCodeError" && reason.response.status === kind.status
        ? undefined
        : `expected status ${kind.status}, got ${tag}${reason === undefined ? "" : `/${reason._tag}`}`
    case "status":
      return reason?._tag === "StatusCodeError" && reason.response.status === kind.code
        ? undefined
        : `expected status ${kind.code}, got ${tag}`
    case "reset":
    case "flaky-reset":
    case "truncated":
    case "stall":
      return reason?._tag === "TransportError" || reason?._tag === "DecodeError" || tag === "TimeoutError"
        ? undefined
        : `expected a transport failure, got ${tag}${reason === undefined ? "" : `/${reason._tag}`}`
  }
}

const judgeValue = (kind: Kind, body: string): string | undefined => {
  switch (kind._tag) {
    case "ok":
      return body.length === kind.size ? undefined : `body of ${body.length} bytes, expected ${kind.size}`
    case "slow-body":
      return body === "x".repeat(kind.chunks) ? undefined : `wrong body ${body}`
    case "flaky":
    case "flaky-reset":
      return body === "ok" ? undefined : `wrong body ${body}`
    default:
      return `${kind._tag} succeeded`
  }
}

/** Outcomes seen over the run, by kind, for the log: shows what the mix reached. */
const tally = new Map<string, number>()
/** Rounds whose server-side request count was checked against the retries. */
let accounted = 0
const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1)
const outcome = (result: Result.Result<string, unknown>): string => {
  if (Result.isSuccess(result)) return "success"
  const error = result.failure as { readonly _tag?: string; readonly reason?: { readonly _tag: string } }
  return error.reason === undefined ? String(error._tag) : `${error._tag}/${error.reason._tag}`
}

const round = (
  index: number,
  rng: Random,
  server: FaultServer,
  callServer: FaultServer,
  threadsBefore: number | undefined
) =>
  Effect.gen(function* () {
    const {
      items,
      form,
      ending,
      concurrency,
      cancels,
      generator,
      perHost,
      ordered,
      buffer,
      deadline,
      budget,
      idleCheck,
      calls
    } = plan(rng)
    const where = (what: string) =>
      at(
        `round ${index} (${form}${generator ? " of a generator" : ""}, ${ending}, concurrency ${concurrency}, perHost ${perHost}, deadline ${deadline}): ${what}`
      )
    const fibers = fiberCounter()
    const requestsBefore = server.requests()
    const clientScope = yield* Scope.make()
    let retried = 0
    const settled = items.map((): Array<Result.Result<string, unknown>> => [])

    const array = items.map(({ kind, cancelAfter }, i) => {
      const request = requestOf(server, kind, `${index}-${i}`)
      if (cancelAfter === undefined) return request
      // Cancelled when the effect completes, or fails.
      const stop = Effect.sleep(cancelAfter)
      return Fanout.cancellable(request, i % 2 === 0 ? stop : Effect.andThen(stop, Effect.fail("stop")))
    })
    // An iterable that is not an array: the batch cannot know its length up front.
    const inputs: Iterable<Fanout.Input> = generator ? { [Symbol.iterator]: () => array.values() } : array
    const options = {
      concurrency,
      read: (response: { readonly text: Effect.Effect<string, HttpClientError.HttpClientError> }) => response.text,
      onProgress: (progress: Fanout.Progress) => {
        retried = progress.retried
      },
      ...(deadline === undefined ? {} : { deadline: `${deadline} millis` as const }),
      ...(perHost === undefined ? {} : { perHost }),
      ...(buffer === undefined ? {} : { buffer }),
      ordered
    }
    const record = (i: number, result: Result.Result<string, unknown>): void => {
      settled[i]?.push(result)
    }

    const batch = (() => {
      switch (form) {
        case "allSettled":
          return Effect.map(Fanout.allSettled(inputs, options), (results) => {
            for (const [i, r] of results.entries()) record(i, r)
          })
        case "streamSettled":
          return Fanout.streamSettled(inputs, options).pipe(
            Stream.runForEach((s) => Effect.sync(() => record(s.index, s.result)))
          )
        case "all":
          return Effect.map(Fanout.all(inputs, options), (values) => {
            for (const [i, v] of values.entries()) record(i, Result.succeed(v))
          })
        case "stream-take":
          return Fanout.streamSettled(inputs, options).pipe(
            Stream.take(rng.int(1, items.length)),
            Stream.runForEach((s) => Effect.sync(() => record(s.index, s.result)))
          )
      }
    })()

    const callResults = calls.map((): Array<Result.Result<string, unknown>> => [])
    const { result, processErrors } = yield* watchingProcess(
      Effect.gen(function* () {
        const context = yield* Layer.buildWithScope(
          Layer.mergeAll(
            NodeHttpClient.layer({
              headersTimeout: "1 second",
              bodyTimeout: "1 second",
              keepAliveTimeout: Duration.millis(KEEP_ALIVE_MILLIS)
            }),
            Retry.layer({
              retries: RETRIES,
              baseDelay: "5 millis",
              maxDelay: "20 millis",
              maxRetryAfter: "2 seconds",
              budget: budget === undefined ? false : { window: budget }
            })
          ),
          clientScope
        )
        // Http.* calls go through the same client, with the policy applied by Retry.layerClient.
        const retrying = yield* Layer.buildWithScope(
          Retry.layerClient.pipe(Layer.provide(Layer.succeedContext(context))),
          clientScope
        )
        const callFibers = yield* Effect.forEach(calls, (c, i) => {
          const call = callOf(callServer, c, `${index}-call-${i}`)
          // A stalled call ends by its caller's timeout (a TimeoutError), not by the client's.
          return (c.kind._tag === "stall" ? Effect.timeout(call, rng.int(50, 300)) : call).pipe(
            Effect.result,
            Effect.flatMap((result) => Effect.sync(() => callResults[i]?.push(result))),
            Effect.provideContext(Context.merge(context, retrying)),
            Effect.forkChild
          )
        })
        const fiber = yield* Effect.forkChild(Effect.provideContext(batch, context))
        let batchExit: Exit.Exit<void, unknown>
        if (ending === "join") {
          batchExit = yield* Fiber.await(fiber)
        } else {
          yield* Effect.sleep(rng.int(10, 400))
          if (ending === "interrupt-batch") yield* Fiber.interrupt(fiber)
          else yield* Scope.close(clientScope, Exit.void)
          batchExit = yield* Fiber.await(fiber)
        }
        yield* Fiber.awaitAll(callFibers)
        return batchExit
      }).pipe(Effect.provideService(Metric.FiberRuntimeMetrics, fibers.service))
    )

    assert.deepStrictEqual(processErrors, [], where("the main process saw no uncaught error"))
    const batchExit = result
    if (Exit.isFailure(batchExit)) {
      assert.isFalse(Cause.hasDies(batchExit.cause), where(`the batch died: ${Cause.pretty(batchExit.cause)}`))
    }
    const settledForm = form === "allSettled" || form === "streamSettled"
    const interruptedBatch = Exit.isFailure(batchExit) && Cause.hasInterruptsOnly(batchExit.cause)
    if (interruptedBatch) assert.strictEqual(ending, "interrupt-batch", where("only an interrupt interrupts the batch"))
    if (settledForm || form === "stream-take") {
      assert.isTrue(
        Exit.isSuccess(batchExit) || interruptedBatch,
        where(`a settled batch failed: ${String(batchExit)}`)
      )
    } else if (Exit.isFailure(batchExit) && !interruptedBatch) {
      const found = Cause.findError(batchExit.cause)
      const tag = found._tag === "Success" ? (found.success as { readonly _tag?: unknown })._tag : undefined
      assert.isTrue(
        typeof tag === "string" && itemTags.has(tag),
        where(`fail-fast batch failed untyped: ${String(tag)}`)
      )
    }
    // Every item ends exactly once: all of them when the batch completes a settled form or
    // succeeds; at most once when it was interrupted, cut short by `take`, or failed fast.
    const complete = Exit.isSuccess(batchExit) && form !== "stream-take"
    items.forEach(({ kind, cancelAfter }, i) => {
      const ended = settled[i] ?? []
      const what = `item ${i} ${JSON.stringify(kind)}${cancelAfter === undefined ? "" : ` cancelled after ${cancelAfter} ms`}`
      if (complete) assert.strictEqual(ended.length, 1, where(`${what} ended exactly once`))
      else assert.isAtMost(ended.length, 1, where(`${what} ended at most once`))
      const result = ended[0]
      if (result === undefined) return
      count(`${kind._tag} -> ${outcome(result)}`)
      const verdict = Result.isSuccess(result)
        ? judgeValue(kind, result.success)
        : judgeFailure(kind, result.failure, {
            interrupt: cancelAfter !== undefined,
            deadline: deadline !== undefined,
            closed: ending === "close-client"
          })
      assert.isUndefined(verdict, where(`${what}: ${verdict}`))
    })
    calls.forEach(({ kind, helper }, i) => {
      const ended = callResults[i] ?? []
      const what = `Http.${helper} call ${i} ${JSON.stringify(kind)}`
      assert.strictEqual(ended.length, 1, where(`${what} ended exactly once`))
      const result = ended[0]!
      count(`Http ${kind._tag} -> ${outcome(result)}`)
      const verdict = Result.isSuccess(result)
        ? judgeValue(kind, result.success)
        : judgeFailure(kind, result.failure, { interrupt: false, deadline: false, closed: ending === "close-client" })
      assert.isUndefined(verdict, where(`${what}: ${verdict}`))
    })
    // A request that was never sent is never retried: in a batch that ran to its end, the
    // server saw one request per valid item plus one per retry.
    if (complete && ending === "join" && deadline === undefined && !cancels) {
      const valid = items.filter((item) => !isInvalid(item.kind)).length
      accounted++
      assert.strictEqual(
        server.requests() - requestsBefore,
        valid + retried,
        where(`requests seen by the server (${retried} retries)`)
      )
    }
    // Nothing is left in flight once the batch and the calls have ended, and closing the
    // client closes every socket.
    for (const s of [server, callServer]) {
      yield* Effect.promise(() => s.noneInFlight()).pipe(Effect.timeout("5 seconds"))
    }
    if (idleCheck) {
      // keepAliveTimeout bounds how long an idle socket stays open, whatever the server hints
      // (the fault server says `Keep-Alive: timeout=10`).
      for (const s of [server, callServer]) {
        const idle = yield* Effect.promise(() => s.allSocketsClosed()).pipe(
          Effect.timeoutOption(KEEP_ALIVE_MILLIS + 1500)
        )
        assert.isTrue(idle._tag === "Some", where(`idle sockets closed by themselves (${s.openSockets()} open)`))
      }
    }
    if (ending !== "close-client") yield* Scope.close(clientScope, Exit.void)
    yield* allSocketsClosed([server, callServer], where)
    yield* nothingOutlived(fibers, threadsBefore, where)
  })

describe("chaos: Fanout and Http", () => {
  it.live(
    "fault storms, invalid requests, cancels, interrupts and closed clients: every item ends once, typed; nothing outlives its round",
    () =>
      Effect.gen(function* () {
        const server = yield* faultServer
        const callServer = yield* faultServer
        const threads = osThreads()
        yield* round(-1, random("http warm-up"), server, callServer, undefined)
        const threadsBefore = osThreads()
        const heapBefore = yield* heapAfterGc
        const took = yield* rounds(ROUNDS, ROUNDS_MILLIS, (i) =>
          round(i, random(`http ${i}`), server, callServer, threadsBefore)
        )
        const heapAfter = yield* heapAfterGc
        const outcomes = [...tally]
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([key, n]) => `${key} ${n}`)
          .join(", ")
        console.info(
          `[chaos] http: ${took.length} rounds (${took.join(", ")} ms) + warm-up; ${server.requests() + callServer.requests()} requests (counted exactly in ${accounted} rounds); outcomes: ${outcomes}; threads ${threads} -> ${threadsBefore}; heap ${mb(heapBefore)} -> ${mb(heapAfter)} MB`
        )
        assert.isAtMost(heapAfter, heapBefore * 1.1, at("heap after GC within 10% of its size after the warm-up"))
      }).pipe(Effect.scoped),
    { timeout: 90_000 }
  )
})

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1)
