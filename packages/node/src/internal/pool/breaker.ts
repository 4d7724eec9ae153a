// Crash-loop breakers: a task module that kills every thread that imports it (or threads that
// die before they are ready) would otherwise respawn threads forever. After THRESHOLD deaths in a
// row with no success in between, the breaker opens for COOLDOWN_MS and tasks fail fast with
// WorkerDiedError("crash-loop"); after the cool-down one more death re-opens it.
import type * as Clock from "effect/Clock"

const THRESHOLD = 3
const COOLDOWN_MS = 10_000

export class Breaker {
  private readonly clock: Clock.Clock
  private startupDeaths = 0
  private startupOpenUntil = 0
  private readonly moduleDeaths = new Map<string, number>()
  private readonly moduleOpenUntil = new Map<string, number>()
  private readonly healthy = new Set<string>()

  constructor(clock: Clock.Clock) {
    this.clock = clock
  }

  /** Why tasks of `module` must fail fast now, or undefined. */
  refusal(module: string): string | undefined {
    const now = this.clock.currentTimeMillisUnsafe()
    if (now < this.startupOpenUntil) return `threads die at start-up; retrying after ${COOLDOWN_MS} ms`
    if (now < (this.moduleOpenUntil.get(module) ?? 0)) return moduleReason(module)
    return undefined
  }

  threadReady(): void {
    this.startupDeaths = 0
  }

  /** A task of `module` ran to an answer: the module is sound, its deaths stop counting. */
  moduleWorked(module: string): void {
    if (this.healthy.has(module)) return
    this.healthy.add(module)
    this.moduleDeaths.delete(module)
  }

  /** Counts a thread that died before it was ready; returns the reason if the breaker opened. */
  startupDeath(): string | undefined {
    if (++this.startupDeaths < THRESHOLD) return undefined
    this.startupOpenUntil = this.clock.currentTimeMillisUnsafe() + COOLDOWN_MS
    this.startupDeaths = THRESHOLD - 1
    return "threads die at start-up"
  }

  /** Counts a thread that died running a task of `module`; returns the reason if the breaker opened. */
  moduleDeath(module: string): string | undefined {
    if (this.healthy.has(module)) return undefined
    const deaths = (this.moduleDeaths.get(module) ?? 0) + 1
    this.moduleDeaths.set(module, deaths)
    if (deaths < THRESHOLD) return undefined
    this.moduleOpenUntil.set(module, this.clock.currentTimeMillisUnsafe() + COOLDOWN_MS)
    this.moduleDeaths.set(module, THRESHOLD - 1)
    return moduleReason(module)
  }
}

const moduleReason = (module: string) =>
  `${module} killed ${THRESHOLD} threads in a row before any of its tasks finished`
