// Crash-loop breakers: a task module that kills every thread that imports it (or threads that
// die before they are ready) would otherwise respawn threads forever. After `deaths` deaths in a
// row, the breaker opens for `cooldownMillis`: tasks of that module (every task, for start-up
// deaths) fail fast with WorkerDiedError("crash-loop"). After the cool-down the next task is
// tried, and one more death re-opens the breaker at once. A module one of whose tasks has
// finished is sound for good: a later death is a crash of a single task, which fails only itself.
import type * as Clock from "effect/Clock"

interface Deaths {
  count: number
  openUntil: number
  /** Why the breaker opened; set when it opens. */
  reason: string
}

export class Breaker {
  private readonly clock: Clock.Clock
  private readonly deaths: number
  private readonly cooldownMillis: number
  private readonly startup: Deaths = { count: 0, openUntil: 0, reason: "" }
  private readonly modules = new Map<string, Deaths>()
  private readonly healthy = new Set<string>()

  constructor(clock: Clock.Clock, deaths: number, cooldownMillis: number) {
    this.clock = clock
    this.deaths = deaths
    this.cooldownMillis = cooldownMillis
  }

  /** Why tasks of `module` must fail fast now, or undefined. */
  refusal(module: string): string | undefined {
    // Asked on every submit: with no death on record there is nothing to refuse, and no clock to read.
    if (this.startup.openUntil === 0 && this.modules.size === 0) return undefined
    const now = this.clock.currentTimeMillisUnsafe()
    if (now < this.startup.openUntil) return explain(this.startup, now)
    const deaths = this.modules.get(module)
    return deaths !== undefined && now < deaths.openUntil ? explain(deaths, now) : undefined
  }

  /** True while threads keep dying before they are ready: starting another one is pointless. */
  startupOpen(): boolean {
    return this.clock.currentTimeMillisUnsafe() < this.startup.openUntil
  }

  threadReady(): void {
    this.startup.count = 0
  }

  /** A task of `module` ran to an answer: the module is sound, its deaths stop counting. */
  moduleWorked(module: string): void {
    if (this.healthy.has(module)) return
    this.healthy.add(module)
    this.modules.delete(module)
  }

  /** Counts a thread that died before it was ready; returns the reason if the breaker opened. */
  startupDeath(cause: string): string | undefined {
    if (!this.counts(this.startup)) return undefined
    this.startup.reason = `${this.deaths} threads in a row died before they were ready (last: ${cause}); every task fails fast`
    return explain(this.startup, this.clock.currentTimeMillisUnsafe())
  }

  /** Counts a thread that died running a task of `module`; returns the reason if the breaker opened. */
  moduleDeath(module: string, cause: string): string | undefined {
    if (this.healthy.has(module)) return undefined
    let deaths = this.modules.get(module)
    if (deaths === undefined) {
      deaths = { count: 0, openUntil: 0, reason: "" }
      this.modules.set(module, deaths)
    }
    if (!this.counts(deaths)) return undefined
    deaths.reason = `${module} killed ${this.deaths} threads in a row before any of its tasks finished (last: ${cause}); its tasks fail fast`
    return explain(deaths, this.clock.currentTimeMillisUnsafe())
  }

  /** One more death; true if it opens the breaker. */
  private counts(deaths: Deaths): boolean {
    if (++deaths.count < this.deaths) return false
    deaths.openUntil = this.clock.currentTimeMillisUnsafe() + this.cooldownMillis
    // After the cool-down, one more death re-opens it.
    deaths.count = this.deaths - 1
    return true
  }
}

const explain = (deaths: Deaths, now: number) => `${deaths.reason} for ${deaths.openUntil - now} ms`
