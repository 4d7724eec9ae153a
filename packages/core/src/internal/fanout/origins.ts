// Feeds each origin's adaptive limit (./adaptive.ts) from the engine's attempts and shows it:
// the scheduler's `Host.limit` and pause, the progress events' `origins`, and Effect metrics.
// Used only when `perHost` is `Fanout.adaptive(...)`; a fixed `perHost` never reaches here.
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Headers from "effect/http/Headers"
import type * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Metric from "effect/Metric"
import * as Result from "effect/Result"
import { offTheClock } from "../retry/loop.ts"
import { isUnsent } from "../retry/unsent.ts"
import type { Outcome, Reason } from "./adaptive.ts"
import type { Host, Scheduler } from "./scheduler.ts"

/** One origin's adaptive state, as in `Fanout.Progress.origins`. */
export interface OriginSnapshot {
  readonly origin: string
  readonly limit: number
  readonly inFlight: number
  readonly baselineMillis: number | undefined
  readonly latencyMillis: number | undefined
  readonly reason: Reason
  readonly pausedUntil: number | undefined
}

/** Gauges of each origin's adaptive limit, with an `origin` attribute. */
export const metrics = {
  limit: Metric.gauge("volley_fanout_origin_limit", {
    description: "Requests allowed in flight to the origin (adaptive perHost)"
  }),
  inFlight: Metric.gauge("volley_fanout_origin_in_flight", {
    description: "Requests in flight to the origin when its limit last moved"
  }),
  baseline: Metric.gauge("volley_fanout_origin_latency_baseline_ms", {
    description: "The origin's uncongested latency (ms): the lowest round latency of the window"
  }),
  latency: Metric.gauge("volley_fanout_origin_latency_ms", {
    description: "Latency to the response head (ms) of the origin's last round (its mean)"
  }),
  changes: Metric.counter("volley_fanout_origin_limit_changes_total", {
    description: "Changes of the origin's limit, by reason",
    incremental: true
  })
} as const

interface Series {
  readonly limit: Metric.Metric<number, unknown>
  readonly inFlight: Metric.Metric<number, unknown>
  readonly baseline: Metric.Metric<number, unknown>
  readonly latency: Metric.Metric<number, unknown>
  readonly changes: Map<Reason, Metric.Metric<number, unknown>>
}

export class Origins {
  private readonly scheduler: Scheduler
  private readonly context: Context.Context<never>
  /** Monotonic time in ms (fractions included): latencies, pauses. */
  readonly now: () => number
  /** Wall-clock time in ms: `Retry-After` dates, the deadline. */
  private readonly wallNow: () => number
  /** Longest pause a `Retry-After` may cause: the retry policy's `maxRetryAfter`. */
  private readonly maxPauseMillis: number
  private readonly deadline: number | undefined
  private readonly attemptTimeoutMillis: number | undefined
  // Weak: an origin the scheduler forgets (idle) takes its series with it.
  private readonly series = new WeakMap<Host, Series>()
  /** The client's own stalls, read by `ticker` (see `stallOf`). */
  private nextTick = Number.POSITIVE_INFINITY
  private stallEnd = Number.NEGATIVE_INFINITY
  private stallLength = 0
  /** The timer's usual lateness (ms), smoothed: how long the client takes to get to an answer. */
  private lag = 0

  constructor(options: {
    readonly scheduler: Scheduler
    readonly context: Context.Context<never>
    readonly now: () => number
    readonly wallNow: () => number
    readonly maxPauseMillis: number
    readonly deadline: number | undefined
    readonly attemptTimeoutMillis: number | undefined
  }) {
    this.scheduler = options.scheduler
    this.context = options.context
    this.now = options.now
    this.wallNow = options.wallNow
    this.maxPauseMillis = options.maxPauseMillis
    this.deadline = options.deadline
    this.attemptTimeoutMillis = options.attemptTimeoutMillis
    options.scheduler.onForget = (host) => this.forgotten(host)
  }

  /**
   * One attempt of a request to `host`, measured: the time to its response head (or to its
   * failure) and what it says about the origin's load are fed to the origin's limit.
   */
  measure<A, E, R>(
    host: Host,
    execute: Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>,
    onResponse: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | HttpClientError.HttpClientError, R> {
    return Effect.suspend(() => {
      if (this.pausedAt(host)) return Effect.andThen(this.pause(host), this.measure(host, execute, onResponse))
      const startedAt = this.now()
      host.adaptive!.started(host.inFlight)
      return Effect.flatMap(
        Effect.onExit(execute, (exit) =>
          Exit.isSuccess(exit) ? Effect.void : Effect.sync(() => this.failed(host, startedAt, exit.cause))
        ),
        (response) => {
          this.responded(host, startedAt, response)
          return onResponse(response)
        }
      )
    })
  }

  /** One attempt of a redirect hop to `host`, measured as `measure` does. */
  timed(
    host: Host,
    execute: Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> {
    return Effect.suspend(() => {
      if (this.pausedAt(host)) return Effect.andThen(this.pause(host), this.timed(host, execute))
      const startedAt = this.now()
      host.adaptive!.started(host.inFlight)
      return Effect.onExit(execute, (exit) =>
        Effect.sync(() =>
          Exit.isSuccess(exit) ? this.responded(host, startedAt, exit.value) : this.failed(host, startedAt, exit.cause)
        )
      )
    })
  }

  // A paused origin (its Retry-After) takes no request until the pause ends: the scheduler holds
  // its new items back, and an attempt that already holds a slot (a retry, a redirect hop) waits
  // here, off its clock (`attemptTimeout` counts from when it is sent). Checked again after the
  // wait: another answer may have made the pause longer.
  private pausedAt(host: Host): boolean {
    return host.pausedUntil > this.now()
  }

  private pause(host: Host): Effect.Effect<void> {
    return offTheClock(Effect.suspend(() => Effect.sleep(Math.max(0, host.pausedUntil - this.now()))))
  }

  /**
   * Runs for the batch: a timer every `TICK_MILLIS` whose lateness is the client's own
   * stall (a CPU shared with other processes, a GC pause, a long turn of its own work). A
   * latency gradient cannot tell such a stall from a queue at the origin; this lets it.
   */
  readonly ticker: Effect.Effect<never> = Effect.suspend(() => {
    this.nextTick = this.now() + TICK_MILLIS
    return Effect.forever(
      Effect.andThen(
        Effect.sleep(TICK_MILLIS),
        Effect.sync(() => {
          const now = this.now()
          const late = now - this.nextTick
          this.lag += LAG_WEIGHT * (Math.max(0, late) - this.lag)
          if (late > STALL_MILLIS) {
            this.stallEnd = now
            this.stallLength = late
          }
          this.nextTick = now + TICK_MILLIS
        })
      )
    )
  })

  /**
   * How much of the latency of a response handled at `now` (started at `startedAt`) is the
   * client's own delay, not the origin's. When the timer is overdue, the client has not run
   * for that long: a response that arrived meanwhile waited for it. Just after a stall the
   * timer saw, the responses handled in the burst that follows waited for up to the stall
   * (less the time since it ended: they may have arrived after it).
   */
  private stallOf(startedAt: number, now: number): number {
    const overdue = now - this.nextTick
    if (overdue > STALL_MILLIS) return Math.min(overdue, now - startedAt)
    if (this.stallEnd <= startedAt) return 0
    return Math.max(0, Math.min(this.stallLength, this.stallEnd - startedAt) - (now - this.stallEnd))
  }

  /** Each adaptive origin's state now, for a progress event. */
  snapshot(): ReadonlyArray<OriginSnapshot> {
    const out: Array<OriginSnapshot> = []
    // A pause that is over is cleared only when the origin next starts a queued request: until
    // then it is no longer reported (a held retry may have gone ahead without clearing it).
    const now = this.now()
    for (const [origin, host] of this.scheduler.hosts) {
      const limit = host.adaptive
      if (limit === undefined) continue
      out.push({
        origin,
        limit: limit.limit,
        inFlight: host.inFlight,
        baselineMillis: limit.baseline,
        latencyMillis: limit.latency,
        reason: limit.reason,
        pausedUntil: host.pausedUntil > now ? host.pausedUntil : undefined
      })
    }
    return out
  }

  private responded(host: Host, startedAt: number, response: HttpClientResponse.HttpClientResponse): void {
    const status = response.status
    if (status === 429 || status === 503) {
      const header = response.headers["retry-after"]
      let pause: number | undefined
      if (header !== undefined) {
        const parsed = Headers.parseRetryAfter(header)
        if (Result.isSuccess(parsed)) pause = Duration.toMillis(Headers.retryAfterDelay(parsed.success, this.wallNow()))
      }
      this.ended(host, startedAt, "overload", pause)
    } else if (status === 504) this.ended(host, startedAt, "timeout")
    else this.ended(host, startedAt, status < 400 ? "ok" : "other")
  }

  private failed(host: Host, startedAt: number, cause: Cause.Cause<HttpClientError.HttpClientError>): void {
    const error = Cause.findErrorOption(cause)
    if (error._tag === "Some") {
      // Refused or reset connections, and the client's own timeouts, are an origin's way of
      // saying it has too much; a request never sent is not (one it could not even encode, or
      // one the client's own circuit breaker or rate limiter refused: each cut the limit).
      const reason = error.value.reason
      const transport = reason._tag === "TransportError" && !isUnsent(error.value)
      this.ended(host, startedAt, !transport ? "other" : isTimeout(reason.cause) ? "timeout" : "overload")
      return
    }
    // Interrupted: by the attempt timeout when it ran that long, else by the batch (a
    // fail-fast stop, the deadline, a cancelled item), which says nothing about the origin.
    const timeout = this.attemptTimeoutMillis
    const timedOut = timeout !== undefined && this.now() - startedAt >= timeout - 1
    this.ended(host, startedAt, timedOut ? "timeout" : "other")
  }

  private ended(host: Host, startedAt: number, outcome: Outcome, retryAfterMillis?: number): void {
    const limit = host.adaptive!
    const now = this.now()
    let pause = retryAfterMillis
    if (pause !== undefined) {
      pause = Math.min(pause, this.maxPauseMillis)
      if (this.deadline !== undefined) pause = Math.min(pause, Math.max(0, this.deadline - this.wallNow()))
    }
    const before = limit.limit
    const changedAt = limit.changedAt
    // A timer due while the client works on a turn fires when it ends, on average half a turn
    // late; an answer that arrives during a turn is handled in the next, a whole turn later.
    const rose = limit.ended(startedAt, now, outcome, pause, this.stallOf(startedAt, now), 2 * this.lag)
    host.limit = limit.limit
    // The scheduler holds the pause (the origin's, whatever paused it); the limit keeps its own to report.
    if (pause !== undefined && limit.pausedUntil > now) this.scheduler.pause(host, limit.pausedUntil)
    if (rose) this.scheduler.raised(host, limit.limit - before)
    // The exact limit moves every round (at `max` too, clamped), its integer part less often:
    // the gauges follow each round, the counter only the limit's moves.
    if (limit.changedAt !== changedAt) this.record(host, limit.reason, limit.limit !== before)
  }

  // A forgotten origin starts again from its initial limit when next met: its gauges say so now,
  // not the limit it had learnt (a limit only changes, and is recorded, when a request ends).
  private forgotten(host: Host): void {
    const series = this.series.get(host)
    if (series === undefined) return
    series.limit.updateUnsafe(host.adaptive!.config.initial, this.context)
    series.inFlight.updateUnsafe(0, this.context)
  }

  private record(host: Host, reason: Reason, moved: boolean): void {
    let series = this.series.get(host)
    if (series === undefined) {
      const attributes = { origin: host.key }
      series = {
        limit: Metric.withAttributes(metrics.limit, attributes),
        inFlight: Metric.withAttributes(metrics.inFlight, attributes),
        baseline: Metric.withAttributes(metrics.baseline, attributes),
        latency: Metric.withAttributes(metrics.latency, attributes),
        changes: new Map()
      }
      this.series.set(host, series)
    }
    const limit = host.adaptive!
    const context = this.context
    series.limit.updateUnsafe(limit.limit, context)
    series.inFlight.updateUnsafe(host.inFlight, context)
    if (limit.baseline !== undefined) series.baseline.updateUnsafe(limit.baseline, context)
    if (limit.latency !== undefined) series.latency.updateUnsafe(limit.latency, context)
    if (!moved) return
    let changes = series.changes.get(reason)
    if (changes === undefined) {
      changes = Metric.withAttributes(metrics.changes, { origin: host.key, reason })
      series.changes.set(reason, changes)
    }
    changes.updateUnsafe(1, context)
  }
}

/** Period of the stall timer (ms). */
const TICK_MILLIS = 5

/** Weight of each tick in the timer's smoothed lateness (a time constant of ~10 ticks). */
const LAG_WEIGHT = 0.1

/** Lateness of the timer (ms) below this is the timer's own jitter, not a stall. */
const STALL_MILLIS = 1

const isTimeout = (cause: unknown): boolean => {
  if (typeof cause !== "object" || cause === null) return false
  const code = (cause as { code?: unknown }).code
  const name = (cause as { name?: unknown }).name
  return (typeof code === "string" && code.includes("TIMEOUT")) || name === "TimeoutError"
}
