// The batch engine: up to `concurrency` worker fibers pull jobs from the scheduler and run them;
// no fiber, Stream or span per request. Each job is one exchange (internal/http/exchange.ts:
// execute, check the status, read the body, so a response is always consumed before its worker
// moves on), run one of two ways:
// - the default policy (no `attemptTimeout`, no `timeout`), a job without its own cancel
//   signal: the first attempt runs bare, with nothing around it but the budget's count; only
//   when it fails does `afterFailure` (internal/retry/loop.ts) take over to retry it. On a
//   client that can start a request without an effect (volley's NodeHttpClient), a worker
//   sends request after request from one suspension of its fiber while they succeed;
// - per-request timeouts, or a `Fanout.cancellable` job: the whole job runs under `run` of the
//   same loop (timers per attempt, the job raced with its signal).
// `Http.*` run the same exchange under the same loop, so both obey one policy. Workers start
// one at a time as jobs are taken (see `Workers`), so their number follows the work in flight,
// never the option: `concurrency: 1e9` over three URLs starts four.
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"
import * as Exchange from "../http/exchange.ts"
import { HopGate, HopRetry, type RedirectError } from "../http/redirect.ts"
import { executeApplied, unwrap } from "../retry/client.ts"
import { DeadlineExceeded, type RetryError } from "../retry/errors.ts"
import * as Loop from "../retry/loop.ts"
import { isRetryable, markFinalUnsafe, RetryPolicy, type RunOptions } from "../retry/policy.ts"
import { isUnsent } from "../retry/unsent.ts"
import type { Progress as Snapshot } from "./model.ts"
import { type OriginSnapshot, Origins } from "./origins.ts"
import { DONE, type Job, type Scheduler, WAIT } from "./scheduler.ts"

export interface Plan<A, E, R> {
  readonly concurrency: number
  readonly deadlineMillis: number | undefined
  readonly read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  /** A caller's `read` may leave the body unread on failure; the default one never does. */
  readonly customRead: boolean
  readonly tracing: boolean
  readonly progress: Progress | undefined
}

/**
 * Where a batch's outcomes go. `failure` and `interrupted` return the cause that ends the batch,
 * or `undefined` to go on, and the batch fails with `X`: build a {@link SettledSink} (never ends
 * it, `X` is `never`) or a {@link FailFastSink} (always does), and `run` types the batch so.
 */
export interface Sink<A, E, X> {
  readonly success: (job: Job, value: A) => void
  readonly failure: (job: Job, error: E) => Cause.Cause<X> | undefined
  readonly interrupted: (job: Job) => Cause.Cause<X> | undefined
}

/** Keeps every outcome: a batch run into it never fails for an item. */
export interface SettledSink<A, E> extends Sink<A, E, never> {
  readonly failure: (job: Job, error: E) => undefined
  readonly interrupted: (job: Job) => undefined
}

/** Ends the batch at the first failed or interrupted item, with the cause it returns. */
export interface FailFastSink<A, E, X> extends Sink<A, E, X> {
  readonly failure: (job: Job, error: E) => Cause.Cause<X>
  readonly interrupted: (job: Job) => Cause.Cause<X>
}

/** Errors of one item besides `read`'s own. */
export type Failure<E> = E | RetryError | RedirectError | HttpClientError.HttpClientError

/** Counters behind progress events; `report` hands the callback a fresh snapshot. */
export class Progress {
  readonly total: number | undefined
  readonly onProgress: (progress: Snapshot) => void
  inFlight = 0
  done = 0
  failed = 0
  retried = 0
  /** Each origin's adaptive limit, in batches with an adaptive `perHost`. */
  origins: Origins | undefined = undefined
  constructor(total: number | undefined, onProgress: (progress: Snapshot) => void) {
    this.total = total
    this.onProgress = onProgress
  }
  report(): void {
    const origins = this.origins
    if (origins !== undefined) this.onProgress(new AdaptiveSnapshot(this, origins))
    else {
      this.onProgress({
        total: this.total,
        done: this.done,
        succeeded: this.done - this.failed,
        failed: this.failed,
        inFlight: this.inFlight,
        retried: this.retried
      })
    }
  }
  readonly retry = (): void => {
    this.retried++
    this.report()
  }
}

/**
 * A progress event of an adaptive batch: `origins` is built only when read (during the
 * callback), so a callback that ignores it costs nothing. A getter on the prototype, not an
 * accessor in an object literal: V8 builds such a literal (and a spread into it) on a slow
 * path, measured at 1-3 µs an event, two events a request.
 */
class AdaptiveSnapshot implements Snapshot {
  readonly total: number | undefined
  readonly done: number
  readonly succeeded: number
  readonly failed: number
  readonly inFlight: number
  readonly retried: number
  readonly #origins: Origins
  constructor(progress: Progress, origins: Origins) {
    this.total = progress.total
    this.done = progress.done
    this.succeeded = progress.done - progress.failed
    this.failed = progress.failed
    this.inFlight = progress.inFlight
    this.retried = progress.retried
    this.#origins = origins
  }
  get origins(): ReadonlyArray<OriginSnapshot> {
    return this.#origins.snapshot()
  }
}

/**
 * Runs every job of `scheduler` into `sink`. Ends when the input is done, at the first failure
 * in fail-fast mode (the sink returns a cause), or at the deadline, after which every job that
 * did not finish gets `DeadlineExceeded` through the sink.
 */
export const run = <A, E, R, X>(
  plan: Plan<A, E, R>,
  scheduler: Scheduler,
  sink: Sink<A, Failure<E>, X>
): Effect.Effect<void, X, R | HttpClient.HttpClient> =>
  // One span per batch. Per-item events only when a tracer records them: Effect's default
  // tracer would keep every event of a 100,000-item batch in memory for nobody. Nor is the span
  // its items' parent then: their requests carry the trace context of the span the batch runs in,
  // if any, as `Http.*` do, not one that no tracer records (two header lines a request, 5% of a
  // small request's CPU).
  Effect.useSpan(SPAN_NAME, { attributes: { "volley.fanout.concurrency": plan.concurrency } }, (span) =>
    Effect.withFiber((fiber) => {
      if (!fiber.getRef(References.TracerEnabled) || fiber.getRef(Tracer.Tracer) === Tracer.nativeTracer) {
        return runIn(plan, scheduler, sink)
      }
      const items = new ItemEvents(span, sink, fiber.getRef(Clock.Clock))
      return Effect.withParentSpan(runIn(plan, scheduler, items), span).pipe(Effect.ensuring(Effect.sync(items.end)))
    })
  ).pipe(Effect.ensuring(Effect.sync(() => scheduler.close())))

/** The name of a batch's span. */
export const SPAN_NAME = "volley.Fanout"

/**
 * A sink that records each item's outcome as an event of the batch span
 * (`volley.fanout.item`: index, method, outcome, `error.type`), and the counts on the span
 * when the batch ends, before passing the item on.
 */
class ItemEvents<A, E, X> implements Sink<A, E, X> {
  readonly span: Tracer.Span
  readonly sink: Sink<A, E, X>
  readonly clock: Clock.Clock
  succeeded = 0
  failed = 0
  constructor(span: Tracer.Span, sink: Sink<A, E, X>, clock: Clock.Clock) {
    this.span = span
    this.sink = sink
    this.clock = clock
  }
  event(job: Job, outcome: string, error?: unknown): void {
    const attributes: Record<string, unknown> = {
      "volley.fanout.index": job.index,
      "http.request.method": job.request.method,
      "volley.fanout.outcome": outcome
    }
    if (error !== undefined) {
      attributes["error.type"] = errorType(error)
      if (HttpClientError.isHttpClientError(error) && error.reason._tag === "StatusCodeError") {
        attributes["http.response.status_code"] = error.reason.response.status
      }
    }
    this.span.event("volley.fanout.item", this.clock.currentTimeNanosUnsafe(), attributes)
  }
  readonly success = (job: Job, value: A): void => {
    this.succeeded++
    this.event(job, "success")
    this.sink.success(job, value)
  }
  readonly failure = (job: Job, error: E): Cause.Cause<X> | undefined => {
    this.failed++
    this.event(job, "failure", error)
    return this.sink.failure(job, error)
  }
  readonly interrupted = (job: Job): Cause.Cause<X> | undefined => {
    this.failed++
    this.event(job, "interrupted")
    return this.sink.interrupted(job)
  }
  readonly end = (): void => {
    this.span.attribute("volley.fanout.succeeded", this.succeeded)
    this.span.attribute("volley.fanout.failed", this.failed)
  }
}

// What failed, by tag: an HttpClientError's reason (`StatusCodeError`, `TransportError`, ...),
// else the error's own tag (`DeadlineExceeded`, a read's error).
// An untraced batch's TracerDisabledWhen: one function for every batch. One made in `runIn`
// would hold that call's whole scope (V8 shares one context among a scope's closures): its sink,
// so every result of the batch, for as long as anything keeps the predicate (a client's cache of
// its last context's references did, until a request in another context replaced it).
const untracedAll = (): boolean => true

const errorType = (error: unknown): string => {
  if (HttpClientError.isHttpClientError(error)) return error.reason._tag
  const tag = (error as { readonly _tag?: unknown } | null)?._tag
  return typeof tag === "string" ? tag : error instanceof Error ? error.name : "unknown"
}

const runIn = <A, E, R, X>(
  plan: Plan<A, E, R>,
  scheduler: Scheduler,
  sink: Sink<A, Failure<E>, X>
): Effect.Effect<void, X, R | HttpClient.HttpClient> =>
  Effect.gen(function* () {
    // Under a `Retry.withPolicy` wrapper, the client beneath it: the batch applies the policy.
    const client = unwrap(yield* HttpClient.HttpClient)
    const policy = yield* RetryPolicy
    const clock = yield* Effect.clockWith(Effect.succeed)
    const start = clock.currentTimeMillisUnsafe()
    const deadline = plan.deadlineMillis === undefined ? undefined : start + plan.deadlineMillis
    const progress = plan.progress
    const runOptions: RunOptions = { deadline, onRetry: progress?.retry }
    const running = deadline === undefined ? undefined : new Set<Job>()
    const { read } = plan

    // A per-host limit, fixed or adaptive, holds for every redirect hop's origin too.
    const gated = scheduler.options.perHost !== undefined || scheduler.options.adaptive !== undefined
    // The worker's gate (see `gate`) moves its item to each of the item's own hops' origins. A
    // caller's `read` runs without it: its own requests (a nested batch's included) are not the
    // item's hops, and two of them redirecting at once would each take a slot for the item, one
    // never given back.
    const itemRead: typeof read =
      gated && plan.customRead ? (response) => Effect.provideService(read(response), HopGate, undefined) : read
    // The exchange `Http.*` run too (status check, body read, release of an unread body), built
    // once per batch, not per request: the hot path allocates the request's effects only.
    const onResponse = Exchange.onResponse(itemRead, !plan.customRead)
    // An adaptive `perHost` measures each attempt (time to the response head, 429/503,
    // timeouts) and feeds it to the origin's limit; a fixed one costs nothing here.
    // Origins' pauses end on the batch's clock.
    scheduler.now = () => Number(clock.monotonicTimeNanosUnsafe()) / 1e6
    const origins =
      scheduler.options.adaptive === undefined
        ? undefined
        : new Origins({
            scheduler,
            context: yield* Effect.context<never>(),
            now: scheduler.now,
            wallNow: () => clock.currentTimeMillisUnsafe(),
            maxPauseMillis: policy.maxRetryAfterMillis,
            deadline,
            attemptTimeoutMillis: policy.attemptTimeoutMillis
          })
    if (origins !== undefined && progress !== undefined) progress.origins = origins
    // Under the policy the batch applies: a `Retry.withPolicy` wrapper deeper in the client passes through.
    const execute = (request: HttpClientRequest.HttpClientRequest) => executeApplied(client, request)
    // `fiber`: the fiber that runs the attempt, when the caller holds it (a worker's first attempt):
    // the client then needs no step to find it.
    const measured = (job: Job, fiber?: Fiber.Fiber<unknown, unknown>, inFlight?: Exchange.InFlight) =>
      origins === undefined || job.host === undefined
        ? Exchange.exchange(client, job.request, onResponse, fiber, inFlight)
        : origins.measure(job.host, execute(job.request), onResponse)
    // An attempt after one that redirected (a retry) starts again at the request's own origin,
    // under its limit: the slot it holds is the hop's, or none if it gave up waiting for one.
    // Built when it runs: an adaptive limit measures it at the origin it is sent to.
    const attempt = (job: Job, fiber?: Fiber.Fiber<unknown, unknown>, inFlight?: Exchange.InFlight) =>
      job.origin === undefined
        ? measured(job, fiber, inFlight)
        : Effect.suspend(() =>
            job.host === job.origin
              ? measured(job)
              : Effect.andThen(
                  backHome(job),
                  Effect.suspend(() => measured(job))
                )
          )
    const backHome = (job: Job) =>
      Effect.withFiber((fiber) => {
        const gate = fiber.getRef(HopGate)
        return gate === undefined ? Effect.void : gate(job.request.url)
      })

    const settle = (job: Job, exit: Exit.Exit<A, Failure<E>>): Effect.Effect<void, X> | undefined => {
      scheduler.finish(job)
      running?.delete(job)
      let stop: Cause.Cause<X> | undefined
      if (Exit.isSuccess(exit)) {
        sink.success(job, exit.value)
      } else {
        const error = Cause.findErrorOption(exit.cause)
        if (Option.isSome(error)) stop = sink.failure(job, error.value)
        // Interrupted from inside the item (its own timeout, its read): only this item fails.
        else if (Cause.hasInterruptsOnly(exit.cause)) stop = sink.interrupted(job)
        // A defect is a bug, not a result: it ends the batch.
        else return Effect.failCause(exit.cause as Cause.Cause<never>)
      }
      if (progress !== undefined) {
        progress.inFlight--
        progress.done++
        if (Exit.isFailure(exit)) progress.failed++
        progress.report()
      }
      return stop === undefined ? undefined : Effect.failCause(stop)
    }

    // Without per-request timeouts the first attempt runs bare and a failure goes on through
    // `afterFailure`: the success path carries no retry machinery at all.
    // The batch deadline needs no timer per request (the batch's own timeout interrupts what
    // is in flight); it only bounds retries, through `runOptions`.
    const bare = policy.attemptTimeoutMillis === undefined && policy.timeoutMillis === undefined
    const retries = policy.retries > 0
    const budget = policy.budget

    // A bare first attempt may start without an effect unless an adaptive limit measures it.
    const startable = bare && origins === undefined

    // Each worker's way to wait out a `Retry-After` without its slot, by fiber: the retry loop
    // runs on the worker's fiber. One on another fiber waits in its slot: a request a `read` runs
    // on a fiber of its own, and a redirect hop's or a `read`'s request inside an attempt timed by
    // `attemptTimeout` or `timeout` (a race with the timer runs it on a fiber of its own; parked
    // there, the timer could cut the wait with no slot to go back to).
    const parkers = new WeakMap<Fiber.Fiber<unknown, unknown>, Loop.WaitForRetryAfter>()
    const waitForRetryAfter: Loop.WaitForRetryAfter = (fiber, url, retryAfterMillis, delayMillis, until) =>
      (parkers.get(fiber) ?? sleepInSlot)(fiber, url, retryAfterMillis, delayMillis, until)

    // One worker: a loop over jobs whose continuations are created once per worker.
    // `self`: the worker's fiber, which runs every step of `loop`.
    const makeWorker = (self: Fiber.Fiber<unknown, unknown>): Effect.Effect<void, X, R | HttpClient.HttpClient> => {
      let current: Job | undefined
      // When the bare first attempt of `current` was counted in the budget.
      let counted = 0
      // A bare first attempt runs on this worker's fiber, interrupted only with the worker: its
      // request is left here, and aborted by the worker (see `Exchange.InFlight`).
      const inFlight: Exchange.InFlight = { current: undefined, context: undefined }
      // Bare first attempts started without an effect (see `Exchange.start`): while they
      // succeed, the worker settles each and sends the next from one suspension of its fiber,
      // `waiting`, which no request resumes; anything else resumes the fiber with its effect.
      let resumeFiber: ((effect: Effect.Effect<void, X, R | HttpClient.HttpClient>) => void) | undefined
      // Set while `start` runs: a request refused at once resumes before it returns, perhaps from
      // inside undici's dispatch; the fiber goes on with it once `start` has returned, never from there.
      let starting = false
      // Interrupted (perhaps while settling, from a progress callback): a response handed over now
      // is not the batch's any more, nor is a next request, though the batch, still stopping its
      // other workers, has not closed its input yet.
      let stopped = false
      // What the fiber continues with, decided before it got to `waiting`: a request refused
      // while `start` ran, or one that failed while the fiber, its op budget spent, had yielded
      // to Effect's scheduler on its way there.
      let pending: Effect.Effect<void, X, R | HttpClient.HttpClient> | undefined
      const waiting = Effect.callback<void, X, R | HttpClient.HttpClient>((resume) => {
        if (pending === undefined) {
          resumeFiber = resume
          return
        }
        const following = pending
        pending = undefined
        resume(following)
      })
      const onStarted = (effect: Effect.Effect<A, Failure<E>, R | HttpClient.HttpClient>): void => {
        if (starting) {
          pending = Effect.matchCauseEffect(effect, firstExit)
          return
        }
        if (stopped) return
        let following: Effect.Effect<void, X, R | HttpClient.HttpClient>
        if (Exit.isExit(effect) && Exit.isSuccess(effect)) {
          try {
            following = onExit(effect as Exit.Exit<A, Failure<E>>)
          } catch (defect) {
            // A progress callback's throw, as it would end the fiber if it ran there.
            following = Effect.die(defect)
          }
          if (following === waiting) return
        } else following = Effect.matchCauseEffect(effect, firstExit)
        const resume = resumeFiber
        if (resume === undefined) {
          pending = following
          return
        }
        resumeFiber = undefined
        resume(following)
      }
      const startBare = (job: Job): Effect.Effect<void, X, R | HttpClient.HttpClient> | undefined => {
        starting = true
        let started: boolean
        try {
          started = Exchange.start<A, Failure<E>, R | HttpClient.HttpClient>(
            client,
            job.request,
            onResponse,
            self,
            inFlight,
            onStarted
          )
        } finally {
          starting = false
        }
        if (!started) return undefined
        // Suspended already (the previous request's response started this one): stays so.
        if (pending === undefined) return waiting
        const following = pending
        pending = undefined
        return following
      }
      const onExit = (exit: Exit.Exit<A, Failure<E>>): Effect.Effect<void, X, R | HttpClient.HttpClient> => {
        const stop = settle(current!, exit)
        current = undefined
        // Nothing of a finished item stays reachable while the worker waits for the next.
        inFlight.current = undefined
        workers.busy--
        if (stop !== undefined) return stop
        // A parked item waiting for a slot gets this one (see `retryAfterWait`); `loop` then ends the worker.
        if (workers.parked !== 0) workers.handOver()
        return loop()
      }
      const onFirstExit = (exit: Exit.Exit<A, Failure<E>>): Effect.Effect<void, X, R | HttpClient.HttpClient> => {
        if (Exit.isFailure(exit)) {
          const error = Cause.findErrorOption(exit.cause)
          // A request that was never sent leaves the budget as if never made (as in `run`).
          if (budget !== undefined && Option.isSome(error) && isUnsent(error.value)) budget.unrequest(counted)
          else if (retries && Option.isSome(error) && isRetryable(policy, error.value)) {
            const job = current!
            const again = Loop.afterFailure(policy, job.request, attempt(job), error.value, runOptions)
            return Effect.flatMap(Effect.exit(again), onExit)
          }
          // Given up on here (as `afterFailure` marks its own): a retry loop around the batch,
          // whose `read` ran it, must not send its request again for it.
          if (Option.isSome(error)) markFinalUnsafe(error.value)
        }
        return onExit(exit)
      }
      // `onFirstExit` as handlers of the attempt: one step per job, not an `Effect.exit` and a `flatMap`.
      const firstExit = {
        onSuccess: (value: A) => onExit(Exit.succeed(value)),
        onFailure: (cause: Cause.Cause<Failure<E>>) => onFirstExit(Exit.failCause(cause))
      }
      const loop = (): Effect.Effect<void, X, R | HttpClient.HttpClient> => {
        // Every slot taken (a parked item took one back): this worker is one too many.
        if (workers.busy >= workers.max) return Effect.void
        const job = scheduler.next()
        if (job === DONE) {
          workers.drained = true
          return Effect.void
        }
        if (job === WAIT) return Effect.flatMap(changed(scheduler), loop)
        current = job
        running?.add(job)
        if (progress !== undefined) {
          progress.inFlight++
          progress.report()
        }
        workers.took()
        if (job.interruptWhen !== undefined) {
          const run = Loop.run(policy, job.request, attempt(job), runOptions)
          return Effect.flatMap(Effect.exit(interruptibleBy(job.interruptWhen, run)), onExit)
        }
        if (bare) {
          if (budget !== undefined) {
            counted = clock.currentTimeMillisUnsafe()
            budget.request(counted)
          }
          // A fresh job is at its own origin (a redirect moves it during its attempt only).
          if (startable && job.host === job.origin && !stopped) {
            const started = startBare(job)
            if (started !== undefined) return started
          }
          return Effect.matchCauseEffect(attempt(job, self, inFlight), firstExit)
        }
        return Effect.flatMap(Effect.exit(Loop.run(policy, job.request, attempt(job), runOptions)), onExit)
      }
      // A retry that waits out a `Retry-After` (of the item's request, of a redirect hop of it, or
      // of a request its `read` sends on this fiber) pauses that origin in the scheduler: no
      // request of it starts until then, those in flight go on. Meanwhile the item gives back its
      // slots (the batch's and its origin's), so other origins' items run in them; after its wait, and its origin's pause (which another answer
      // may have made longer), it takes them back (the batch's first: a worker finishing a job
      // hands it over, before any new item), never past `until`: then its retry fails unsent.
      // A plain backoff keeps its slot, as before: it asks nothing of the origin, and giving the
      // slot away for a 100 ms wait would buy little for its cost.
      const retryAfterWait: Loop.WaitForRetryAfter = (_, url, retryAfterMillis, delayMillis, until) => {
        // As the retry is decided: no request of the origin starts while its body is drained.
        scheduler.pauseAt(url, scheduler.now() + retryAfterMillis)
        return Effect.suspend(() => {
          const job = current!
          const left = scheduler.vacate(job)
          let held = false
          const slot = Effect.callback<void>((resume) => {
            const cancel = workers.unpark(() => {
              held = true
              resume(Effect.void)
            })
            return cancel === undefined ? undefined : Effect.sync(cancel)
          })
          // The slot it gave back, at its item's origin (or its hop's): a `read`'s own request
          // that waits parks the item too, which keeps its place at its own origin.
          const origin =
            left === undefined
              ? Effect.void
              : Effect.callback<void>((resume) => {
                  const cancel = scheduler.reenter(job, left, () => resume(Effect.void))
                  return cancel === undefined ? undefined : Effect.sync(cancel)
                })
          const back = Effect.andThen(pauseOf(scheduler, url), Effect.andThen(slot, origin))
          // Out of time without a slot: the retry must find its deadline passed (it then fails
          // unsent), never a millisecond left by a timer that fired early, or it would be sent in a
          // slot taken by force.
          const bounded =
            until === Number.POSITIVE_INFINITY
              ? back
              : Effect.suspend(() =>
                  Effect.flatMap(
                    Effect.timeoutOption(back, Math.max(0, until - clock.currentTimeMillisUnsafe())),
                    (got) => (Option.isSome(got) ? Effect.void : past(clock, until))
                  )
                )
          return Effect.uninterruptibleMask((restore) => {
            workers.park()
            return Effect.ensuring(
              restore(Effect.andThen(Effect.sleep(delayMillis), Loop.offTheClock(bounded))),
              // Interrupted or out of time without a slot: it takes its slot back as it ends, unsent.
              Effect.sync(() => {
                if (!held) workers.take()
              })
            )
          })
        })
      }
      const run = Effect.ensuring(
        Effect.onInterrupt(Effect.suspend(loop), () =>
          Effect.sync(() => {
            stopped = true
            inFlight.current?.abort(new Error("The request was interrupted"))
          })
        ),
        // The client's context for the worker (see `Exchange.InFlight`) ends with it.
        Effect.sync(() => inFlight.context?.end())
      )
      // Found by its fiber (see `waitForRetryAfter`): a context of its own per worker would cost
      // every request the client's look-up of its context (see NodeHttpClient's `FastRefs`).
      parkers.set(self, retryAfterWait)
      if (!gated) return run
      // A redirect hop of this worker's item takes a slot at its own origin (one per worker,
      // not per request: a hop is rare).
      // The wait for it is off the attempt's clock: `attemptTimeout` counts from when it has one.
      let hopped: Job | undefined
      const gate = (url: string) =>
        Loop.offTheClock(
          Effect.callback<void>((resume) => {
            const job = current!
            const cancel = scheduler.moveTo(job, url, () => {
              hopped = job
              resume(Effect.void)
            })
            return cancel === undefined ? undefined : Effect.sync(cancel)
          })
        )
      const gatedLoop = Effect.provideService(run, HopGate, gate)
      if (origins === undefined) return gatedLoop
      // An adaptive limit also learns from hops: the redirect code sends them through the
      // environment's client, which here times each attempt at the hop's origin (only the
      // item's own hops: a request `read` makes elsewhere is not the origin's to count).
      const hopClient = HttpClient.transform(client, (effect, request) => {
        const job = current
        const host = job?.host
        if (job === undefined || job !== hopped || host === undefined || scheduler.hostAt(request.url) !== host)
          return effect
        return origins.timed(host, effect)
      })
      return Effect.provideService(gatedLoop, HttpClient.HttpClient, hopClient)
    }

    const workers = new Workers<X, R | HttpClient.HttpClient>(plan.concurrency, makeWorker)
    // An adaptive batch times the client's own stalls while it runs (see `Origins.ticker`).
    const raced = origins === undefined ? workers.run : Effect.raceFirst(workers.run, origins.ticker)
    // Per-host limits make attempts wait (a redirect hop for a slot, a retry for its origin's
    // pause): `attemptTimeout` leaves those waits out (see `Loop.AttemptClock`). Kept when the
    // batch already runs under one (its client's rate limit, an attempt around the batch).
    const all =
      gated && policy.attemptTimeoutMillis !== undefined && (yield* Loop.AttemptClock) === undefined
        ? Effect.provideService(raced, Loop.AttemptClock, Loop.UNTIMED)
        : raced
    // Redirect hops, run inside an item's attempt, keep to the batch deadline and count their
    // retries in its progress (one provide per batch).
    const bounded = deadline === undefined ? all : Effect.provideService(all, Loop.CurrentDeadline, deadline)
    const parking = Effect.provideService(bounded, Loop.RetryAfterWait, waitForRetryAfter)
    const counted = progress === undefined ? parking : Effect.provideService(parking, HopRetry, progress.retry)
    const untraced = plan.tracing ? counted : Effect.provideService(counted, HttpClient.TracerDisabledWhen, untracedAll)
    // A batch that ends early (fail-fast, interrupted) leaves requests in flight, interrupted
    // with the workers: a last event says none is left, so a progress bar does not hang.
    const traced =
      progress === undefined
        ? untraced
        : Effect.onError(untraced, () =>
            Effect.sync(() => {
              if (progress.inFlight === 0) return
              progress.inFlight = 0
              progress.report()
            })
          )
    if (deadline === undefined) return yield* traced
    const finished = yield* Effect.timeoutOption(traced, deadline - start)
    if (Option.isSome(finished)) return
    // Deadline: what was in flight was interrupted with the workers; nothing is lost.
    return yield* reportLate(scheduler, running!, sink, progress)
  })

/**
 * The batch's worker fibers, started lazily: one at first, then one more each time a worker
 * takes a job while none is spare, up to `max`. So at most one worker is idle beyond those a
 * shrinking load left waiting, and the fibers follow the work in flight: `max` = 1e9 over three
 * URLs starts four, where starting `max` up front exhausts the heap. Fail-fast like
 * `Effect.forEach`: the first worker to fail (or die) interrupts the others and fails the
 * whole; interrupting the whole interrupts every worker and waits for them.
 *
 * Like `Effect.forEach`, a worker starts synchronously (it runs until its request suspends),
 * from a plain loop in `grow`, never from inside another worker's start: no deep stack however
 * many start at once.
 */
class Workers<X, R> {
  readonly max: number
  readonly make: (self: Fiber.Fiber<void, X>) => Effect.Effect<void, X, R>
  readonly fibers = new Set<Fiber.Fiber<void, X>>()
  /** Workers started and not ended. */
  live = 0
  /** Workers running a job: the slots taken. */
  busy = 0
  /** Workers whose job waits holding no slot (see `park`). */
  parked = 0
  /** Parked jobs waiting for a slot, first come first served. */
  private slotWaiters: Array<() => void> = []
  /** A worker saw the input done: nothing will ever need another worker. */
  drained = false
  /** How the whole ends: the first failure, or success when the last worker ends. */
  exit: Exit.Exit<void, X> | undefined = undefined
  private fork: ((effect: Effect.Effect<void, X, R>) => Fiber.Fiber<void, X>) | undefined = undefined
  private growing = false
  private wake: (() => void) | undefined = undefined

  constructor(max: number, make: (self: Fiber.Fiber<void, X>) => Effect.Effect<void, X, R>) {
    this.max = max
    this.make = make
  }

  /** A worker took a job: start another if none is spare. */
  took(): void {
    this.busy++
    if (this.busy + this.parked >= this.live) this.grow()
  }

  /**
   * The calling worker's job waits holding no slot: another worker may run a job in it (started
   * if none is spare). So the fibers may outnumber `max` by the parked ones; the slots never do.
   */
  park(): void {
    this.busy--
    this.parked++
    // A parked job waiting for a slot comes first, as when a worker finishes a job.
    if (this.slotWaiters.length > 0) this.handOver()
    else this.grow()
  }

  /**
   * A parked job takes its slot back: at once if one is free, else `resume` is called when a
   * worker finishing a job hands its slot over. Returns how to stop waiting.
   */
  unpark(resume: () => void): (() => void) | undefined {
    if (this.busy < this.max) {
      this.take()
      resume()
      return undefined
    }
    const waiter = () => {
      this.take()
      resume()
    }
    this.slotWaiters.push(waiter)
    return () => {
      const i = this.slotWaiters.indexOf(waiter)
      if (i >= 0) this.slotWaiters.splice(i, 1)
    }
  }

  /** A worker gave up its slot (it finished a job): the parked job first in line takes it. */
  handOver(): void {
    this.slotWaiters.shift()?.()
  }

  /**
   * A parked job takes its slot (also when it gave up waiting for one: it then fails unsent, or
   * its batch is stopping, and its worker settles it at once).
   */
  take(): void {
    this.busy++
    this.parked--
  }

  private grow(): void {
    // A worker started by the loop below takes a job and calls back here: the loop goes on.
    if (this.growing || this.fork === undefined) return
    this.growing = true
    while (this.exit === undefined && !this.drained && this.busy + this.parked >= this.live && this.busy < this.max) {
      this.live++
      // Registered by its first step, before any of its work: it runs inside `fork`, and its
      // first item can end a stream's consumer, which stops the batch (and every registered
      // worker) at once when the batch fiber is waiting, i.e. when another worker grows.
      const fiber = this.fork(
        Effect.withFiber((self) => {
          this.fibers.add(self as Fiber.Fiber<void, X>)
          return this.make(self as Fiber.Fiber<void, X>)
        })
      )
      const exit = fiber.pollUnsafe()
      if (exit !== undefined) {
        this.fibers.delete(fiber)
        this.ended(exit)
      } else {
        fiber.addObserver((exit) => {
          this.fibers.delete(fiber)
          this.ended(exit)
        })
      }
    }
    this.growing = false
  }

  private ended(exit: Exit.Exit<void, X>): void {
    this.live--
    if (this.exit !== undefined) return
    // A worker interrupted from outside (by `run`) is not a result.
    if (Exit.isFailure(exit) && !Cause.hasInterruptsOnly(exit.cause)) this.exit = exit
    else if (this.live === 0) this.exit = Exit.void
    else return
    this.wake?.()
  }

  readonly run: Effect.Effect<void, X, R> = Effect.withFiber((parent) => {
    this.fork = Effect.runForkWith(parent.context as Context.Context<R>)
    // The first workers start inside the callback, under `onExit`: one of them can end the
    // batch's consumer (a stream's `take`) and so interrupt this fiber before it gets here. The
    // interrupt waits for the callback to return, then `onExit` stops every worker started.
    const ended = Effect.callback<void, X>((resume) => {
      this.grow()
      // None started (an empty array: no worker is due), so none will ever end the batch.
      if (this.live === 0) this.exit ??= Exit.void
      if (this.exit !== undefined) return resume(this.exit)
      this.wake = () => resume(this.exit!)
    })
    return Effect.onExit(ended, () => {
      this.wake = undefined
      this.exit ??= Exit.void // no worker starts any more
      return this.fibers.size === 0 ? Effect.void : Fiber.interruptAll(Array.from(this.fibers))
    })
  })
}

/**
 * Gives every job that did not finish by the deadline `DeadlineExceeded`, in input order: those
 * that were running, then those never started, paced by the stream window like real results,
 * so a settled stream over an endless input goes on only as fast as its consumer takes items.
 */
const reportLate = <A, E, X>(
  scheduler: Scheduler,
  running: Set<Job>,
  sink: Sink<A, Failure<E>, X>,
  progress: Progress | undefined
): Effect.Effect<void, X> => {
  const jobs = scheduler.rest(running)
  // Only the consumer can make room now: an origin's pause (ended or not) is no reason to look
  // again, and a stale one (no `next()` clears it any more) would make `changed` spin.
  scheduler.wakeAt = 0
  // The workers were interrupted with whatever they were running.
  if (progress !== undefined) progress.inFlight = 0
  let waiting: Job | undefined
  const loop = (): Effect.Effect<void, X> => {
    for (let n = 0; ; n++) {
      const job = waiting ?? jobs.next().value
      if (job === undefined) break
      waiting = undefined
      if (!running.has(job) && !scheduler.startLate(job)) {
        waiting = job
        progress?.report()
        return Effect.flatMap(changed(scheduler), loop)
      }
      const stop = sink.failure(job, new DeadlineExceeded({ method: job.request.method, url: job.request.url }))
      if (progress !== undefined) {
        progress.done++
        progress.failed++
      }
      if (stop !== undefined) {
        progress?.report()
        return Effect.failCause(stop)
      }
      // An endless input in an array form never ends; let it at least be interrupted.
      if (n === 4096) return Effect.flatMap(Effect.yieldNow, loop)
    }
    progress?.report()
    return Effect.void
  }
  return Effect.suspend(loop)
}

/**
 * Runs `effect` until `signal` completes, then interrupts it (closing its socket, ending its
 * retries). The signal goes first so that one already complete wins before the request starts.
 */
const interruptibleBy = <A, E, R>(
  signal: Effect.Effect<unknown, unknown>,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.raceFirst(
    Effect.flatMap(Effect.exit(signal), () => Effect.interrupt),
    effect
  )

const sleepInSlot: Loop.WaitForRetryAfter = (_fiber, _url, _retryAfterMillis, delayMillis) => Effect.sleep(delayMillis)

/** Waits until `clock` is past `until` (a timer may end a millisecond early). */
const past = (clock: Clock.Clock, until: number): Effect.Effect<void> =>
  Effect.suspend(() => {
    const left = until - clock.currentTimeMillisUnsafe()
    return left >= 0 ? Effect.andThen(Effect.sleep(left + 1), past(clock, until)) : Effect.void
  })

/** Waits until the origin of `url` is not paused (another answer may make its pause longer). */
const pauseOf = (scheduler: Scheduler, url: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const left = (scheduler.hostAt(url)?.pausedUntil ?? 0) - scheduler.now()
    return left > 0 ? Effect.andThen(Effect.sleep(left), pauseOf(scheduler, url)) : Effect.void
  })

/**
 * Waits until the scheduler changes (a result taken, a slot freed), or until an origin's
 * `Retry-After` pause ends: nothing else would wake a worker then.
 */
const changed = (scheduler: Scheduler): Effect.Effect<void> => {
  const version = scheduler.version
  const wait = Effect.callback<void>((resume) => {
    const cancel = scheduler.wait(version, () => resume(Effect.void))
    return cancel === undefined ? undefined : Effect.sync(cancel)
  })
  const wakeAt = scheduler.wakeAt
  if (wakeAt === 0) return wait
  return Effect.raceFirst(wait, Effect.sleep(Math.max(0, wakeAt - scheduler.now())))
}
