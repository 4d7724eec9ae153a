// How each Fanout form runs a batch: options checked and resolved into an engine plan and a
// scheduler, results collected into an array or handed to a stream's consumer, and pipelines'
// stages run with the fetching window held until each stage is done. Fanout.ts declares the
// forms and documents them; ./engine.ts runs the requests.
import * as Cause from "effect/Cause"
import * as Channel from "effect/Channel"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as HttpClient from "effect/http/HttpClient"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import * as Exchange from "../http/exchange.ts"
import { consuming } from "../http/json.ts"
import * as Validate from "../options.ts"
import type * as Adaptive from "./adaptive.ts"
import * as Engine from "./engine.ts"
import {
  AdaptiveLimit,
  type Item,
  type ItemError,
  ItemInterrupted,
  type Options,
  type PipelineOptions,
  type Settled,
  type StreamOptions
} from "./model.ts"
import { type Input, type Job, Scheduler } from "./scheduler.ts"

/** The values in input order; the first failure fails the batch. */
export const all = <A, E, R>(
  requests: Iterable<Input>,
  options: Options<A, E, R> | undefined
): Effect.Effect<Array<A>, ItemError<E> | Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Effect.flatMap(resolve(requests, options, undefined), ({ plan, scheduler, total }) => {
    const values: Array<A> = total === undefined ? [] : new Array(total).fill(undefined)
    const sink: Engine.FailFastSink<A, Engine.Failure<E>, ItemError<E>> = {
      success: (job, value) => {
        values[job.index] = value
      },
      failure: (_, error) => Cause.fail(error),
      interrupted: (job) => Cause.fail(interrupted(job))
    }
    return Effect.as(Engine.run(plan, scheduler, sink), values)
  })

/** Every item's `Result` in input order; never fails for an item. */
export const allSettled = <A, E, R>(
  requests: Iterable<Input>,
  options: Options<A, E, R> | undefined
): Effect.Effect<Array<Result.Result<A, ItemError<E>>>, Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  Effect.flatMap(resolve(requests, options, undefined), ({ plan, scheduler, total }) => {
    // Filled, so V8 keeps a packed array rather than a dictionary for large batches.
    const results: Array<Result.Result<A, ItemError<E>>> = total === undefined ? [] : new Array(total).fill(undefined)
    const sink: Engine.SettledSink<A, Engine.Failure<E>> = {
      success: (job, value) => {
        results[job.index] = Result.succeed(value)
      },
      failure: (job, error) => {
        results[job.index] = Result.fail(error)
        return undefined
      },
      interrupted: (job) => {
        results[job.index] = Result.fail(interrupted(job))
        return undefined
      }
    }
    return Effect.as(Engine.run(plan, scheduler, sink), results)
  })

/** The successful items as they complete; the first failure fails the stream. */
export const stream = <A, E, R>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined
): Stream.Stream<Item<A>, ItemError<E> | Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  makeStream(
    requests,
    options,
    (push): Engine.FailFastSink<A, Engine.Failure<E>, ItemError<E>> => ({
      success: (job, value) => push(job.index, { index: job.index, request: job.request, value }),
      failure: (_, error) => Cause.fail(error),
      interrupted: (job) => Cause.fail(interrupted(job))
    })
  )

/** Every item's outcome as it completes; never fails for an item. */
export const streamSettled = <A, E, R>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined
): Stream.Stream<Settled<A, E>, Validate.InvalidOptionsError, R | HttpClient.HttpClient> =>
  makeStream(
    requests,
    options,
    (push: Push<Settled<A, E>>): Engine.SettledSink<A, Engine.Failure<E>> => ({
      success: (job, value) =>
        push(job.index, { index: job.index, request: job.request, result: Result.succeed(value) }),
      failure: (job, error) => {
        push(job.index, { index: job.index, request: job.request, result: Result.fail(error) })
        return undefined
      },
      interrupted: (job) => {
        push(job.index, { index: job.index, request: job.request, result: Result.fail(interrupted(job)) })
        return undefined
      }
    })
  )

/** Fetches and runs `stage` on each body; the first failure of either fails the stream. */
export const pipeline = <B, E2, R2, A, E, R>(
  requests: Iterable<Input>,
  stage: (item: Item<A>) => Effect.Effect<B, E2, R2>,
  options: PipelineOptions<A, E, R> | undefined
): Stream.Stream<Item<B>, ItemError<E> | E2 | Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  staged(
    requests,
    options,
    (push: Push<Leased<Item<A>>>, release): Engine.FailFastSink<A, Engine.Failure<E>, ItemError<E>> => ({
      success: (job, value) => push(job.index, { index: job.index, request: job.request, value, release }),
      failure: (_, error) => Cause.fail(error),
      interrupted: (job) => Cause.fail(interrupted(job))
    }),
    (item): Effect.Effect<Item<B>, E2 | ItemInterrupted, R2> =>
      Effect.catchCause(
        Effect.map(stage(item), (value): Item<B> => ({ index: item.index, request: item.request, value })),
        // Interrupted from inside: typed, as a fetch's interrupted `read` is (a bare interrupt
        // would look to the caller as if it had been interrupted itself).
        (cause): Effect.Effect<never, E2 | ItemInterrupted> =>
          Cause.hasInterruptsOnly(cause)
            ? Effect.fail(
                new ItemInterrupted({ index: item.index, method: item.request.method, url: item.request.url })
              )
            : Effect.failCause(cause)
      )
  )

/** {@link pipeline} that emits every item's outcome, the fetch's or the stage's. */
export const pipelineSettled = <B, E2, R2, A, E, R>(
  requests: Iterable<Input>,
  stage: (item: Item<A>) => Effect.Effect<B, E2, R2>,
  options: PipelineOptions<A, E, R> | undefined
): Stream.Stream<Settled<B, E | E2>, Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  staged(
    requests,
    options,
    (push: Push<Leased<Settled<A, E>>>, release): Engine.SettledSink<A, Engine.Failure<E>> => {
      const settle = (job: Job, result: Result.Result<A, ItemError<E>>): undefined => {
        push(job.index, { index: job.index, request: job.request, result, release })
      }
      return {
        success: (job, value) => settle(job, Result.succeed(value)),
        failure: (job, error) => settle(job, Result.fail(error)),
        interrupted: (job) => settle(job, Result.fail(interrupted(job)))
      }
    },
    (item): Effect.Effect<Settled<B, E | E2>, never, R2> => {
      const { index, request, result } = item
      if (Result.isFailure(result)) return Effect.succeed({ index, request, result: Result.fail(result.failure) })
      return Effect.flatMap(
        Effect.exit(stage({ index, request, value: result.success })),
        (exit): Effect.Effect<Settled<B, E | E2>> => {
          if (Exit.isSuccess(exit)) return Effect.succeed({ index, request, result: Result.succeed(exit.value) })
          const error = Cause.findErrorOption(exit.cause)
          if (Option.isSome(error)) return Effect.succeed({ index, request, result: Result.fail(error.value) })
          // Interrupted from inside: only this item fails. A defect is a bug and ends the stream.
          if (!Cause.hasInterruptsOnly(exit.cause)) return Effect.failCause(exit.cause as Cause.Cause<never>)
          const failure = new ItemInterrupted({ index, method: request.method, url: request.url })
          return Effect.succeed({ index, request, result: Result.fail(failure) })
        }
      )
    }
  )

type Leased<T> = T & { readonly release: () => void }

// Fetches into `sink` (with items leaving the window only when `release`d) and runs `run` on
// each item, `stageConcurrency` at a time, releasing the item when `run` has succeeded with it.
const staged = <A, E, R, X, In extends { readonly release: () => void }, Out, E2, R2>(
  requests: Iterable<Input>,
  options: PipelineOptions<A, E, R> | undefined,
  sink: (push: Push<In>, release: () => void) => Engine.Sink<A, Engine.Failure<E>, X>,
  run: (item: In) => Effect.Effect<Out, E2, R2>
): Stream.Stream<Out, X | E2 | Validate.InvalidOptionsError, R | R2 | HttpClient.HttpClient> =>
  Stream.unwrap(
    Effect.map(
      // `concurrency` first, so a bad one is reported under its own name, not as the default's.
      Effect.flatMap(Validate.positiveInt("concurrency", options?.concurrency ?? 16), (concurrency) =>
        Validate.positiveInt("stageConcurrency", options?.stageConcurrency ?? concurrency)
      ),
      (stageConcurrency) =>
        makeStream(requests, options, sink, true).pipe(
          // Released when the stage succeeds only: a stage that fails or is interrupted ends the
          // stream, and releasing its slot then (the consumer gone, the other stages interrupted
          // one by one before the batch) would wake a worker to start another request.
          Stream.mapEffect((item) => Effect.tap(run(item), () => Effect.sync(item.release)), {
            concurrency: stageConcurrency,
            unordered: !(options?.ordered ?? false)
          })
        )
    )
  )

const interrupted = (job: Job): ItemInterrupted =>
  new ItemInterrupted({ index: job.index, method: job.request.method, url: job.request.url })

/** Checks a batch's options and builds its engine plan and scheduler. */
const resolve = <A, E, R>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined,
  stream: { readonly ordered: boolean } | undefined
) =>
  Effect.gen(function* () {
    // A lone URL (a string, a URL object) or request where an iterable of them goes.
    yield* Validate.iterable("requests", requests, "an iterable of requests", "write [url] for one URL")
    // Checked, not read as they come: from JavaScript or under a cast, options that are not an
    // object were dropped without a word, a `read` or `onProgress` that is not a function died
    // in the middle of the batch (a request already sent), and `ordered: "false"` was truthy.
    if (options != null) yield* Validate.record("options", options)
    const concurrency = yield* Validate.positiveInt("concurrency", options?.concurrency ?? 16)
    // `null` (from JavaScript) is unset, as for the options themselves.
    const read = options?.read ?? undefined
    const onProgress = options?.onProgress ?? undefined
    yield* Validate.optional(read, (read) => func("read", read))
    yield* Validate.optional(onProgress, (onProgress) => func("onProgress", onProgress))
    const tracing = yield* Validate.oneOf("tracing", options?.tracing ?? false, [true, false])
    yield* Validate.oneOf("ordered", options?.ordered ?? false, [true, false])
    const perHostOption = options?.perHost
    const adaptive =
      perHostOption instanceof AdaptiveLimit ? yield* adaptiveConfig(perHostOption, concurrency) : undefined
    const perHost =
      perHostOption instanceof AdaptiveLimit
        ? undefined
        : yield* Validate.optional(perHostOption, (n) => Validate.positiveInt("perHost", n))
    const deadline = yield* Validate.optional(options?.deadline, (d) =>
      Validate.duration("deadline", d, { positive: true })
    )
    const buffer = yield* Validate.positiveInt("buffer", options?.buffer ?? concurrency, 0)
    const total = Array.isArray(requests) ? requests.length : undefined
    const plan: Engine.Plan<A, E, R> = {
      concurrency: total === undefined ? concurrency : Math.min(concurrency, total),
      deadlineMillis: deadline === undefined ? undefined : Duration.toMillis(deadline),
      read: read ?? (Exchange.readBytes as unknown as Engine.Plan<A, E, R>["read"]),
      customRead: read !== undefined && !consuming.has(read),
      tracing,
      progress: onProgress === undefined ? undefined : new Engine.Progress(total, onProgress)
    }
    const scheduler = new Scheduler(requests[Symbol.iterator](), {
      perHost: perHost === undefined || perHost >= concurrency ? undefined : perHost,
      adaptive,
      window: stream === undefined ? Number.POSITIVE_INFINITY : concurrency + buffer,
      ordered: stream?.ordered ?? false,
      // Requests read ahead into per-origin queues while their origin is busy: enough for
      // fairness across many origins, bounded so a huge input is not turned into requests at
      // once, and so is the bound itself: `concurrency: 1e9` must not read an endless input.
      lookahead: Math.min(Math.max(1024, concurrency * 16), MAX_LOOKAHEAD)
    })
    return { plan, scheduler, buffer, total }
  })

/** Most requests read ahead of the workers, whatever `concurrency` is (see `perHost`). */
const MAX_LOOKAHEAD = 65_536

// Checked when a batch starts; `max` (then `min` and `initial`) clamped to `concurrency`,
// which caps every origin anyway.
const adaptiveConfig = (limit: AdaptiveLimit, concurrency: number) =>
  Effect.gen(function* () {
    // `Fanout.adaptive(null)` from JavaScript is no options, as `undefined` is; a string is not.
    const options = yield* Validate.record("perHost", limit.options ?? {})
    const min = yield* Validate.positiveInt("perHost.min", options.min ?? 1)
    const max = yield* Validate.positiveInt("perHost.max", options.max ?? Math.max(256, min))
    const initial = yield* Validate.positiveInt("perHost.initial", options.initial ?? Math.min(max, Math.max(4, min)))
    if (min > max) {
      return yield* new Validate.InvalidOptionsError({
        option: "perHost.min",
        reason: `must be <= max (${max}), got ${min}`
      })
    }
    if (initial < min || initial > max) {
      return yield* new Validate.InvalidOptionsError({
        option: "perHost.initial",
        reason: `must be between min (${min}) and max (${max}), got ${initial}`
      })
    }
    const cap = Math.min(max, concurrency)
    return { min: Math.min(min, cap), max: cap, initial: Math.min(initial, cap) } satisfies Adaptive.Config
  })

type Push<Out> = (index: number, out: Out) => void

const makeStream = <A, E, R, X, Out>(
  requests: Iterable<Input>,
  options: StreamOptions<A, E, R> | undefined,
  sink: (push: Push<Out>, release: () => void) => Engine.Sink<A, Engine.Failure<E>, X>,
  // Items leave the window when the consumer calls `release`, not when it pulls again.
  manual = false
): Stream.Stream<Out, X | Validate.InvalidOptionsError, R | HttpClient.HttpClient> => {
  const ordered = options?.ordered ?? false
  return Stream.fromChannel(
    Channel.fromTransform((_, scope) =>
      Effect.gen(function* () {
        const { plan, scheduler, buffer } = yield* resolve(requests, options, { ordered })
        let ready: Array<Out> = []
        let finished: Exit.Exit<void, X> | undefined
        let puller: (() => void) | undefined
        const wake = () => puller?.()
        // Completion order, or a reorder buffer releasing the next index due.
        const pending = new Map<number, Out>()
        let due = 0
        const push: Push<Out> = ordered
          ? (index, out) => {
              if (index !== due) {
                pending.set(index, out)
                return
              }
              ready.push(out)
              due++
              for (let next = pending.get(due); next !== undefined; next = pending.get(due)) {
                pending.delete(due++)
                ready.push(next)
              }
              wake()
            }
          : (_, out) => {
              ready.push(out)
              wake()
            }
        const release = () => scheduler.consume(1)
        yield* Engine.run(plan, scheduler, sink(push, release)).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              finished = exit
              wake()
            })
          ),
          Effect.forkIn(scope)
        )
        // A pull means the consumer is done with the previous chunk: only then do its items
        // leave the window. Chunks are capped at `buffer` so the fetching can go on meanwhile.
        const chunk = Math.max(1, buffer)
        let lent = 0
        const pull: Effect.Effect<readonly [Out, ...Array<Out>], X | Cause.Done> = Effect.suspend(() => {
          if (lent > 0 && !manual) {
            scheduler.consume(lent)
            lent = 0
          }
          if (ready.length > 0) {
            let out = ready
            if (ready.length <= chunk) ready = []
            else {
              out = ready.slice(0, chunk)
              ready = ready.slice(chunk)
            }
            lent = out.length
            return Effect.succeed(out as unknown as readonly [Out, ...Array<Out>])
          }
          if (finished !== undefined) return Exit.isSuccess(finished) ? Cause.done() : Effect.failCause(finished.cause)
          return Effect.callback<readonly [Out, ...Array<Out>], X | Cause.Done>((resume) => {
            if (ready.length > 0 || finished !== undefined) return resume(pull)
            puller = () => {
              puller = undefined
              resume(pull)
            }
            return Effect.sync(() => {
              puller = undefined
            })
          })
        })
        return pull
      })
    )
  )
}

const func = (option: string, value: unknown): Effect.Effect<void, Validate.InvalidOptionsError> =>
  typeof value === "function"
    ? Effect.void
    : Effect.fail(new Validate.InvalidOptionsError({ option, reason: `must be a function, got ${typeof value}` }))
