// A retry budget over a sliding window of buckets: retries may reach `ratio` of the requests
// seen in the window, plus `minPerSecond` each second so a quiet client can still retry. Plain
// counters (no fibers, no allocation per call) because the batch hot path calls `request` once
// per item; times come from the caller's Clock so TestClock drives it. Each request goes into
// the bucket of its own time, so requests older than the window never count (an hour of
// successes must not fund a retry storm when the upstream starts failing).
//
// Memory does not depend on the window: one-second buckets up to MAX_BUCKETS seconds, wider
// buckets beyond (a window of 1e12 s has 600 buckets of about 1.7e9 s; what ages out does so a
// bucket at a time, i.e. within 1/600 of the window). Running totals make `tryRetry` O(1) too.

/** Buckets of the ring, at most; one per second for windows up to this many seconds. */
export const MAX_BUCKETS = 600

export interface BudgetConfig {
  readonly ratio: number
  readonly minPerSecond: number
  readonly windowSeconds: number
}

export class Budget {
  readonly config: BudgetConfig
  /** Width of one bucket, in milliseconds. */
  private readonly width: number
  private readonly requests: Float64Array
  private readonly retries: Float64Array
  /** Bucket number (time / width) of the newest bucket. */
  private head = Number.NEGATIVE_INFINITY
  private requestTotal = 0
  private retryTotal = 0

  constructor(config: BudgetConfig) {
    this.config = config
    const widthSeconds = Math.ceil(config.windowSeconds / MAX_BUCKETS)
    const buckets = Math.ceil(config.windowSeconds / widthSeconds)
    this.width = widthSeconds * 1000
    this.requests = new Float64Array(buckets)
    this.retries = new Float64Array(buckets)
  }

  /** Counts one request (not one attempt) made at `nowMillis`. */
  request(nowMillis: number): void {
    this.requests[this.slot(nowMillis)]! += 1
    this.requestTotal += 1
  }

  /**
   * Takes back a request counted at `atMillis` that turned out never to be sent (an invalid
   * URL or header): it must not fund other requests' retries. No-op once it left the window.
   */
  unrequest(atMillis: number): void {
    if (this.takeBack(this.requests, atMillis)) this.requestTotal -= 1
  }

  /** Takes one retry from the budget; `false` when the window has used its share. */
  tryRetry(nowMillis: number): boolean {
    const slot = this.slot(nowMillis)
    const allowed = this.requestTotal * this.config.ratio + this.config.minPerSecond * this.config.windowSeconds
    if (this.retryTotal + 1 > allowed) return false
    this.retries[slot]! += 1
    this.retryTotal += 1
    return true
  }

  /**
   * Gives back a retry taken at `atMillis` that was never sent (interrupted while waiting to
   * be). No-op once it left the window.
   */
  untryRetry(atMillis: number): void {
    if (this.takeBack(this.retries, atMillis)) this.retryTotal -= 1
  }

  // Removes one count made at `atMillis` from its bucket, if that bucket is still in the window.
  private takeBack(counts: Float64Array, atMillis: number): boolean {
    const bucket = Math.floor(atMillis / this.width)
    if (bucket > this.head || this.head - bucket >= counts.length) return false
    const slot = modulo(bucket, counts.length)
    if (counts[slot]! < 1) return false
    counts[slot]! -= 1
    return true
  }

  // Moves the ring forward to `nowMillis`, emptying the buckets that left the window, and
  // returns the bucket of that time (the newest, if the clock went back).
  private slot(nowMillis: number): number {
    const n = this.requests.length
    const bucket = Math.floor(nowMillis / this.width)
    if (bucket > this.head) {
      if (bucket - this.head >= n) {
        this.requests.fill(0)
        this.retries.fill(0)
        this.requestTotal = 0
        this.retryTotal = 0
      } else {
        for (let b = this.head + 1; b <= bucket; b++) {
          const i = modulo(b, n)
          this.requestTotal -= this.requests[i]!
          this.retryTotal -= this.retries[i]!
          this.requests[i] = 0
          this.retries[i] = 0
        }
      }
      this.head = bucket
    }
    // A clock gone back, still within the window: the time's own bucket, where `unrequest`
    // will look for it.
    return modulo(bucket > this.head - n ? bucket : this.head, n)
  }
}

const modulo = (a: number, n: number): number => ((a % n) + n) % n
