// The adaptive per-origin limit behind `perHost: Fanout.adaptive(...)`: a pure state machine,
// one per origin, fed with what each attempt observed (when it started, when its response head
// arrived, whether the origin said it was overloaded) and explicit times in milliseconds. No
// Effects, no clock, no timers: the engine feeds it, the scheduler reads `limit` and
// `pausedUntil`, and the unit tests drive it with made-up times.
//
// Why this algorithm (a latency gradient, as in Netflix's Gradient2 and TCP Vegas, with TCP's
// slow start and multiplicative decrease, and BBR's periodic probe of the uncongested latency):
//
// - The signal is queueing, read from latency. An origin that serves `C` requests at once and
//   queues the rest answers in its base latency `L` while at most `C` are in flight; with
//   `C + k` in flight a request waits for the `k` ahead of it, so (Little's law) the latency is
//   `L * (1 + k / C)`. The gradient `baseline / latency` is then `C / (C + k)`, and
//   `limit * gradient` is `C`: one step lands on the capacity, whatever `C` is, which no
//   additive rule does. A step lowers the limit by at most a quarter (`MIN_GRADIENT`), so a
//   stall of the client that reads as a queue costs little. A headroom of `sqrt(limit) / 3`
//   (at least 0.5) is added so the limit keeps probing upwards, and the limit settles about
//   `TOLERANCE × C + headroom` (simulated, C = 24: 25-30). With no queue at all it grows by 5%
//   a round (`GROWTH`), so a dip caused by a stall is made up in a few rounds.
// - The baseline is the origin's uncongested latency: the lowest round latency in a sliding
//   window of two buckets of 10 s, so a stale minimum ages out. Once the limit sits above the
//   capacity every round queues, so every 10 s one round runs at 3/4 of the limit (`PROBE`)
//   and measures the latency without that queue.
// - A round's latency is its mean (Little's law holds for the mean: a median or any quantile
//   misses a queue shorter than its share of the round; at C = 24 with 8 queued, 24 answers of
//   32 take the base latency and the median sees none of it), each answer counted at most twice
//   the latency near the baseline (`CAP`), so one answer a stall held for long moves a round by
//   little; smoothed over rounds (half the newest): a stall of the machine (a GC pause, a busy
//   CPU) delays some answers of a round and moves this by half for a round; a queue at the
//   origin delays answers every round, moves it all the way and stays. In slow start each round
//   counts on its own, and it takes two slow rounds in a row to end it: the first round's
//   answers also waited for new connections, and a round of one or two answers is all jitter
//   (measured at load 12 on 2 cores: slow start ended at 1-2, leaving only the headroom to grow by).
// - An answer within 5 ms is fast whatever the queue (`FAST_MILLIS`): against a 0.2 ms
//   loopback origin, the client's own work grows with concurrency and would hold the limit low.
// - Errors are not latency. A 429 or 503 (often answered at once), a refused or reset
//   connection, or a timeout never feeds the latency; it halves the limit, at most once per
//   round trip: neither a request that started before the last decrease nor anything within a
//   baseline's time of it (a retry of such a request) decreases it again, or a burst of 503s
//   from one full queue would collapse the limit to `min`. A `Retry-After` also pauses the
//   origin (no new request starts) until that time; the engine caps it by the batch's
//   deadline and the retry policy's `maxRetryAfter`.
// - Slow start: from `initial`, the limit grows by half a request per fast response (x1.5 a
//   round) until the smoothed latency is 1.5x the baseline, or an overload, so reaching
//   `C = 24` from 1 costs about a hundred requests, not many hundreds.
// - Rounds, not single samples: the limit moves once per `ceil(limit)` responses, and only
//   responses to requests started since the last change count: the others measure a limit
//   that is gone, and counting them makes the limit overshoot. So a round takes about two
//   round trips: the requests in flight at a change are answered, uncounted, in the first
//   (simulated, slow start from 1: 24 after 11 round trips, 81 after 17).
// - Latency is time to the response head, not to the end of the body: queueing at the origin
//   shows there, and the size of a body does not.
// - Application limited: the limit grows only while the origin actually used at least half of
//   it in the round (the batch's `concurrency` or a slow consumer may hold it lower); otherwise
//   it would drift up to `max` untested and flood the origin once the other work ends.
// - Per origin: each origin has its own state, so one slow or failing origin never lowers
//   another's limit. The batch's `concurrency` stays a hard cap above all of them.
// - Latency is also the client's: on a machine whose CPU is shared or saturated, the client
//   gets to an answer late, and a latency gradient alone reads that as queueing (measured at a
//   load average of 9-14 on 2 cores against a 0.2 ms nginx origin: limits of 13-40 instead of
//   64, at half the throughput). So `Origins` times the client itself with a 5 ms timer: its
//   lateness is the client's stall. The gradient reads each latency less the stall it may
//   have carried (`stalledMillis`), and answers within `FAST_MILLIS` plus twice the timer's
//   usual lateness (`clientMillis`: a whole turn of the client's own work) count as fast. The
//   baseline, a minimum kept for 20 s, takes raw latencies only: a stall taken off one too
//   many would read every later round as queueing. What stays: a stall the timer cannot see
//   (shorter than a tick) still moves one round, which the smoothing and the quarter-step
//   cap bound.

/** Validated options of an adaptive limit. */
export interface Config {
  readonly initial: number
  readonly min: number
  readonly max: number
}

/** Why the limit last changed (or why it has its value). */
export type Reason =
  /** It is still `initial`. */
  | "initial"
  /** Growing by half a request per fast response, before the first sign of congestion. */
  | "slow-start"
  /** Latency near the baseline: grown by the headroom. */
  | "headroom"
  /** Latency above the baseline: lowered by the gradient. */
  | "queueing"
  /** One round at 3/4 of the limit, every 10 s, to measure the baseline without a queue. */
  | "probe"
  /** A 429 or 503: halved. */
  | "overload"
  /** An attempt timed out: halved. */
  | "timeout"
  /** A 429 or 503 with `Retry-After`: halved, and the origin paused until then. */
  | "retry-after"

/** What ended an attempt, as far as the limit cares. */
export type Outcome = "ok" | "overload" | "timeout" | "other"

/** Length of each of the two buckets of the baseline's sliding window. */
export const BASELINE_WINDOW_MILLIS = 10_000

/** Factor of a multiplicative decrease. */
export const DECREASE = 0.5

/** Lowest gradient of one round: latency alone lowers the limit by at most a quarter a round. */
const MIN_GRADIENT = 0.75

/** Growth per round while the latency shows no queue at all (beyond the headroom). */
const GROWTH = 0.05

/**
 * An answer counts at most this many times the latency near the baseline in its round's mean:
 * a queue one capacity deep (twice the base latency) still counts in full, a stall of the
 * client that held one answer for long does not outweigh the round.
 */
const CAP = 2

/** Weight of the newest round in the smoothed latency. */
const SMOOTHING = 0.5

/**
 * Share of the limit a probe round runs at: below the capacity whenever the limit is within
 * a third above it, which is where the gradient keeps it.
 */
const PROBE = 0.75

/** Latency this far (ms) above the baseline is timer jitter, not a queue. */
const QUEUE_FLOOR_MILLIS = 1

/**
 * Answers within this many ms are fast, whatever the queue. Against a fast origin (a 0.2 ms
 * loopback answer) what grows with concurrency is the client's own work, not a queue at the
 * origin: without this the limit would settle far below what the client can drive (measured:
 * 2, at half the throughput of a fixed 64). A few milliseconds of queueing costs nothing
 * against origins whose answers take tens, whose baseline is above this anyway.
 */
const FAST_MILLIS = 5

/** Latency within this factor of the baseline is noise, not a queue. */
const TOLERANCE = 1.05

/**
 * Slow start ends when a round's latency is this share of the baseline or less: its first
 * rounds have a sample or two each, whose jitter alone must not end it.
 */
const SLOW_START_EXIT = 0.67

export class AdaptiveLimit {
  readonly config: Config
  /** The exact limit; the scheduler uses `limit`, its integer part. */
  value: number
  /** Requests of this origin allowed in flight now. */
  limit: number
  reason: Reason = "initial"
  /** When the limit last changed (ms), `undefined` before its first change. */
  changedAt: number | undefined = undefined
  /** No request may start before this time (ms); 0 when not paused. */
  pausedUntil = 0
  /** Lowest round latency (ms) of the window, `undefined` before the first round. */
  baseline: number | undefined = undefined
  /** Latency (ms) of the last complete round (its capped mean). */
  latency: number | undefined = undefined
  /** Whether the limit is still in slow start. */
  slowStart = true
  /** Slow rounds in a row during slow start. */
  private slowRounds = 0

  private minCurrent = Number.POSITIVE_INFINITY
  private minPrevious = Number.POSITIVE_INFINITY
  private bucketStart: number | undefined = undefined
  // The current round: its responses' latencies (the first `samples` of `round`, grown by
  // doubling, never allocated per sample), and the most in flight seen.
  private round = new Float64Array(16)
  /** The same latencies less what a stall of the client may have added to each. */
  private unstalled = new Float64Array(16)
  private samples = 0
  /** The client's usual delay in getting to an answer (ms), as last given. */
  private client = 0
  private peak = 0
  /** Whether this round runs below the limit to measure the baseline (see `PROBE`). */
  private probing = false
  private nextProbe = 0
  /** Round latencies, smoothed (see `SMOOTHING`). */
  private smoothed: number | undefined = undefined
  /** Attempts that started before this time do not decrease the limit (again). */
  private decreasedAt = Number.NEGATIVE_INFINITY

  constructor(config: Config) {
    this.config = config
    this.value = config.initial
    this.limit = config.initial
  }

  /** An attempt starts with `inFlight` requests of this origin in flight (itself included). */
  started(inFlight: number): void {
    if (inFlight > this.peak) this.peak = inFlight
  }

  /**
   * An attempt that started at `startedAt` ended at `now` with `outcome` (for "ok", when its
   * response head arrived). `retryAfterMillis` is the pause an overload asked for, already
   * capped by the caller. `stalledMillis` is how much of its latency a stall of the client
   * itself may have added (it was not running when the answer came), and `clientMillis` the
   * client's usual delay in getting to an answer (see `Origins`). Returns true when the limit
   * rose or a pause ended, so that waiting workers should look again.
   */
  ended(
    startedAt: number,
    now: number,
    outcome: Outcome,
    retryAfterMillis?: number,
    stalledMillis = 0,
    clientMillis = 0
  ): boolean {
    switch (outcome) {
      case "ok":
        return this.sample(startedAt, now, stalledMillis, clientMillis)
      case "overload":
      case "timeout": {
        const pause = retryAfterMillis !== undefined && retryAfterMillis > 0
        if (pause) this.pausedUntil = Math.max(this.pausedUntil, now + retryAfterMillis)
        // Once per round trip: not for attempts that started before the last decrease, nor
        // for retries of requests that did (they start after it, but within a round trip).
        const roundTrip = this.baseline ?? 0
        if (startedAt >= this.decreasedAt && now - this.decreasedAt >= roundTrip) {
          this.decrease(now, pause ? "retry-after" : outcome)
        } else if (pause) {
          this.reason = "retry-after"
          this.changedAt = now
        }
        return false
      }
      case "other":
        return false
    }
  }

  /** Whether the origin is paused at `now`; clears a pause that has ended. */
  paused(now: number): boolean {
    if (this.pausedUntil === 0) return false
    if (now < this.pausedUntil) return true
    this.pausedUntil = 0
    return false
  }

  private sample(startedAt: number, now: number, stalledMillis: number, clientMillis: number): boolean {
    const latency = Math.max(0, now - startedAt)
    // It measured the queue a decrease already answered.
    if (this.changedAt !== undefined && startedAt < this.changedAt) return false
    if (this.samples === this.round.length) {
      this.round = grown(this.round)
      this.unstalled = grown(this.unstalled)
    }
    this.round[this.samples] = latency
    this.unstalled[this.samples++] = Math.max(0, latency - stalledMillis)
    this.client = clientMillis
    const samples = this.samples
    if (samples < Math.max(1, this.probing ? this.limit : Math.ceil(this.value))) return false
    // The baseline is a minimum kept for 20 s: only raw latencies may set it (a stall taken
    // off one too many would hold every later round above it, as queueing). The gradient
    // reads the latencies without the client's stalls, and allows for its usual delay.
    const cap = this.baseline === undefined ? Number.POSITIVE_INFINITY : CAP * this.near(this.baseline)
    const mean = roundLatency(this.round, samples, cap)
    const fair = roundLatency(this.unstalled, samples, cap)
    const peak = this.peak
    this.samples = 0
    this.peak = 0
    this.latency = mean
    this.observeBaseline(mean, now)
    const baseline = this.baseline!
    const before = this.limit
    if (this.probing) {
      // The probe round measured the baseline: back to the limit it had.
      this.probing = false
      this.nextProbe = now + BASELINE_WINDOW_MILLIS
      this.set(this.value, now, "headroom")
      return this.limit > before
    }
    if (!this.slowStart && now >= this.nextProbe) {
      this.probing = true
      this.limit = Math.max(this.config.min, Math.floor(this.value * PROBE))
      this.reason = "probe"
      this.changedAt = now
      return false
    }
    // Smoothed over rounds: a stall of the machine (a GC pause, a busy CPU) slows one round
    // and moves this by half; a queue at the origin slows every round and moves it all the way.
    this.smoothed = this.smoothed === undefined ? fair : SMOOTHING * fair + (1 - SMOOTHING) * this.smoothed
    const near = this.near(baseline)
    // In slow start each round on its own (two slow ones end it): smoothing would carry the
    // first round, whose answers also waited for new connections, into the next.
    const ratio = Math.min(1, near / (this.slowStart ? fair : this.smoothed))
    const gradient = Math.max(MIN_GRADIENT, ratio)
    const used = peak * 2 >= this.value
    const slow = ratio < (this.slowStart ? SLOW_START_EXIT : 1)
    if (this.slowStart) {
      // Two slow rounds in a row: a queue stays, one late answer in a round of one or two
      // (the jitter of a busy machine) does not; ending at 2 leaves only the headroom to grow.
      this.slowRounds = slow ? this.slowRounds + 1 : 0
      if (this.slowRounds >= 2) {
        // The first queue: slow start ends, and the gradient takes the limit back to capacity.
        this.slowStart = false
        this.nextProbe = now + BASELINE_WINDOW_MILLIS
        this.set(this.value * gradient, now, "queueing")
      } else if (used && !slow) {
        // Half a request more per fast response, held for a first slow round (x1.5 a round,
        // not TCP's x2 a round trip): the latency shows a queue a round late, and the overshoot
        // is what it shows by then.
        this.set(this.value + Math.max(1, samples / 2), now, "slow-start")
      }
    } else {
      // No queue at all: grow by a twentieth (recovering quickly from a dip a stall caused);
      // otherwise the gradient's step to the capacity, plus the headroom.
      const target = slow
        ? this.value * gradient + headroom(this.value)
        : this.value + Math.max(headroom(this.value), GROWTH * this.value)
      if (target < this.value) this.set(target, now, "queueing")
      else if (used && target > this.value) this.set(target, now, "headroom")
    }
    return this.limit > before
  }

  /** Latency (ms) that shows no queue: the baseline with its noise, or a fast answer. */
  private near(baseline: number): number {
    return Math.max(baseline * TOLERANCE + QUEUE_FLOOR_MILLIS, FAST_MILLIS + this.client)
  }

  private observeBaseline(latency: number, now: number): void {
    if (this.bucketStart === undefined) this.bucketStart = now
    else if (now - this.bucketStart >= BASELINE_WINDOW_MILLIS) {
      // A whole bucket without a sample drops both: the old minimum says nothing any more.
      this.minPrevious =
        now - this.bucketStart >= 2 * BASELINE_WINDOW_MILLIS ? Number.POSITIVE_INFINITY : this.minCurrent
      this.minCurrent = Number.POSITIVE_INFINITY
      this.bucketStart = now
    }
    if (latency < this.minCurrent) this.minCurrent = latency
    this.baseline = Math.min(this.minCurrent, this.minPrevious)
  }

  private decrease(now: number, reason: Reason): void {
    if (this.slowStart) this.nextProbe = now + BASELINE_WINDOW_MILLIS
    this.slowStart = false
    this.probing = false
    this.decreasedAt = now
    this.samples = 0
    this.peak = 0
    this.set(this.value * DECREASE, now, reason)
  }

  private set(value: number, now: number, reason: Reason): void {
    const { min, max } = this.config
    this.value = Math.min(max, Math.max(min, value))
    this.limit = Math.max(min, Math.floor(this.value))
    this.reason = reason
    this.changedAt = now
  }
}

const grown = (xs: Float64Array<ArrayBuffer>): Float64Array<ArrayBuffer> => {
  const out = new Float64Array(xs.length * 2)
  out.set(xs)
  return out
}

/** A round's latency: the mean of its first `n` answers, each counted at most `cap`. */
const roundLatency = (xs: Float64Array, n: number, cap: number): number => {
  let sum = 0
  for (let i = 0; i < n; i++) sum += Math.min(cap, xs[i]!)
  return sum / n
}

/** Requests the limit probes above what the gradient says the origin holds. */
const headroom = (limit: number): number => Math.max(0.5, Math.sqrt(limit) / 3)
