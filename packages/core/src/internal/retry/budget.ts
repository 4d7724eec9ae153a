// A retry budget over a sliding window of one-second buckets: retries may reach `ratio` of the
// requests seen in the window, plus `minPerSecond` each second so a quiet client can still
// retry. Plain counters (no fibers, no allocation per call) because the batch hot path calls
// `request` once per item; times come from the caller's Clock so TestClock drives it. Each
// request goes into the bucket of its own second, so requests older than the window never
// count (an hour of successes must not fund a retry storm when the upstream starts failing).

export interface BudgetConfig {
  readonly ratio: number
  readonly minPerSecond: number
  readonly windowSeconds: number
}

export class Budget {
  readonly config: BudgetConfig
  private readonly seconds: Float64Array
  private readonly requests: Float64Array
  private readonly retries: Float64Array

  constructor(config: BudgetConfig) {
    this.config = config
    this.seconds = new Float64Array(config.windowSeconds).fill(-1)
    this.requests = new Float64Array(config.windowSeconds)
    this.retries = new Float64Array(config.windowSeconds)
  }

  /** Counts one request (not one attempt) made at `nowMillis`. */
  request(nowMillis: number): void {
    this.requests[this.slot(nowMillis)]! += 1
  }

  /** Takes one retry from the budget; `false` when the window has used its share. */
  tryRetry(nowMillis: number): boolean {
    const slot = this.slot(nowMillis)
    const now = Math.floor(nowMillis / 1000)
    let requests = 0
    let retries = 0
    for (let i = 0; i < this.seconds.length; i++) {
      if (now - this.seconds[i]! < this.seconds.length) {
        requests += this.requests[i]!
        retries += this.retries[i]!
      }
    }
    const allowed = requests * this.config.ratio + this.config.minPerSecond * this.config.windowSeconds
    if (retries + 1 > allowed) return false
    this.retries[slot]! += 1
    return true
  }

  private slot(nowMillis: number): number {
    const second = Math.floor(nowMillis / 1000)
    const slot = second % this.seconds.length
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second
      this.requests[slot] = 0
      this.retries[slot] = 0
    }
    return slot
  }
}
