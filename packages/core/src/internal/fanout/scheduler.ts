// Decides which request a free worker runs next. Plain mutable state, no Effects: every worker
// calls `next()` once per request, so this is on the hot path of every batch.
//
// - Global bound: the batch runs `concurrency` workers, so at most that many requests are in
//   flight; no semaphore needed.
// - Per-origin bound: requests whose origin is at its limit wait in that origin's queue while
//   workers go on with other origins (round-robin over the origins that have work), so one slow
//   host holds at most `perHost` workers. PartitionedSemaphore would not do: it shares one pool.
//   With an adaptive `perHost` each origin's limit moves (./adaptive.ts, fed by ./origins.ts):
//   `Host.limit` is read here.
// - Pauses: an origin paused by a `Retry-After` (its adaptive limit's, or a retry's in any batch,
//   see `pauseAt`) starts nothing until then. A batch without `perHost` starts tracking origins
//   at its first pause: until then it parses no URL.
// - Window: a stream's consumer must take results for new requests to start (`held` counts
//   started-but-not-taken; in input order the window is on indices so the next result due can
//   always start). A slow consumer therefore throttles fetching instead of buffering bodies.
import * as Effect from "effect/Effect"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import { originOf, urlText } from "../url.ts"
import { type Config as AdaptiveConfig, AdaptiveLimit } from "./adaptive.ts"

/** A request on its own: a URL (fetched with `GET`) or any `HttpClientRequest`. */
export type Target = string | URL | HttpClientRequest.HttpClientRequest

/** A request that is interrupted, on its own, when `interruptWhen` completes. */
export class Cancellable {
  readonly request: Target
  readonly interruptWhen: Effect.Effect<unknown, unknown>
  constructor(request: Target, interruptWhen: Effect.Effect<unknown, unknown>) {
    this.request = request
    this.interruptWhen = interruptWhen
  }
}

/** What a batch accepts per item. */
export type Input = Target | Cancellable

export class Host {
  /** The origin, as `Scheduler.hosts` keys it. */
  readonly key: string
  inFlight = 0
  queue: Array<Job> = []
  head = 0
  /** Requests of this origin allowed in flight: `perHost`, or the adaptive limit's. */
  limit: number
  readonly adaptive: AdaptiveLimit | undefined
  /** Redirected jobs waiting for a slot here; served before the queue (they started earlier). */
  hops: Array<PendingHop> | undefined = undefined
  /** No request of the origin starts before this (monotonic ms): a `Retry-After`. 0 when not paused. */
  pausedUntil = 0
  constructor(key: string, limit: number, adaptive: AdaptiveConfig | undefined) {
    this.key = key
    this.adaptive = adaptive === undefined ? undefined : new AdaptiveLimit(adaptive)
    this.limit = this.adaptive === undefined ? limit : this.adaptive.limit
  }
  /**
   * Whether a redirect hop may take a slot now: under the limit, pause or not (the item it
   * continues already started; its deadline bounds it, and a paused origin would leave the
   * hop waiting for a slot that only a request ending there hands over).
   */
  get free(): boolean {
    return this.inFlight < this.limit
  }
  /** Whether no request of the origin is in flight, queued or waiting for a slot here. */
  get idle(): boolean {
    return this.inFlight === 0 && this.head === this.queue.length && (this.hops === undefined || this.hops.length === 0)
  }
  /** Whether a request may start now (under its limit, not paused). */
  open(now: () => number): boolean {
    if (this.inFlight >= this.limit) return false
    return this.pausedUntil === 0 || !this.paused(now())
  }
  /** Whether the origin is paused at `now`; clears a pause that has ended. */
  paused(now: number): boolean {
    if (this.pausedUntil === 0) return false
    if (now < this.pausedUntil) return true
    this.pausedUntil = 0
    return false
  }
}

interface PendingHop {
  readonly job: Job
  readonly moved: () => void
}

export class Job {
  readonly index: number
  readonly request: HttpClientRequest.HttpClientRequest
  /** The origin whose slot the job holds: its request's, then its redirect hop's (see `moveTo`). */
  host: Host | undefined
  /** The origin of the job's own request: where a retry of it starts again. */
  readonly origin: Host | undefined
  readonly interruptWhen: Effect.Effect<unknown, unknown> | undefined
  constructor(index: number, input: Input, host: (url: string) => Host | undefined) {
    const cancellable = input instanceof Cancellable
    // A cancellable item whose signal is not an Effect (a JavaScript caller's) is invalid too.
    const signal = cancellable && Effect.isEffect(input.interruptWhen) ? input.interruptWhen : undefined
    this.index = index
    this.request =
      cancellable && signal === undefined
        ? invalidItem("its interruptWhen is not an Effect")
        : toRequest(cancellable ? input.request : input)
    this.host = host(this.request.url)
    this.origin = this.host
    this.interruptWhen = signal
  }
}

export const WAIT = 0
export const DONE = 1

export interface SchedulerOptions {
  readonly perHost: number | undefined
  /** An adaptive limit per origin instead of a fixed `perHost`. */
  readonly adaptive: AdaptiveConfig | undefined
  /** Max started-but-not-taken results (streams); `Infinity` for arrays. */
  readonly window: number
  readonly ordered: boolean
  /** Max requests read ahead of the workers into per-origin queues. */
  readonly lookahead: number
}

// Started jobs at the front of an origin's queue that `next` drops at once (see there).
const COMPACT_AFTER = 1024

// Idle origins whose adaptive limit is kept (see `settle`).
export const MAX_IDLE_ORIGINS = 1024

// Idle origins `settle` looks at per call: more than the one it may add, so the excess drains.
const SETTLE_LOOKS = 4

export class Scheduler {
  readonly options: SchedulerOptions
  private readonly source: Iterator<Input>
  /**
   * Origins with work, by `originOf` key, and the idle ones still worth keeping (see `settle`):
   * a stream over an endless input of origins must not keep one for each.
   */
  readonly hosts = new Map<string, Host>()
  /** Idle origins with an adaptive limit, least recently idle first. */
  private readonly idleHosts = new Set<Host>()
  private readonly ready: Array<Host> = []
  private rr = 0
  private exhausted = false
  private buffered = 0
  /** Requests read from the input so far (also the next index). */
  pulled = 0
  started = 0
  /** Results taken by the consumer (streams); in order mode, every index below it. */
  consumed = 0
  /** Bumped on every change a waiting worker may care about; guards against lost wake-ups. */
  version = 0
  private waiters: Array<() => void> = []
  /** Monotonic ms, set by the engine: when a paused origin may go on. */
  now: () => number = Date.now
  /** The earliest end of an origin's pause, or 0: a waiting worker must look again then. */
  wakeAt = 0

  /** Whether origins are tracked at all (a `perHost` limit, fixed or adaptive, or a pause). */
  private tracked: boolean

  constructor(source: Iterator<Input>, options: SchedulerOptions) {
    this.source = source
    this.options = options
    this.tracked = options.perHost !== undefined || options.adaptive !== undefined
  }

  next(): Job | typeof WAIT | typeof DONE {
    const { window, ordered } = this.options
    // Before the window's early return too: a worker that waits with a pause end in the past
    // would otherwise race its wait with `sleep(0)` and spin until the consumer takes a result.
    if (this.wakeAt !== 0 && this.now() >= this.wakeAt) this.wakeAt = this.nextWake()
    const limit = ordered ? this.consumed + window : Number.POSITIVE_INFINITY
    if (!ordered && this.started - this.consumed >= window) return this.idle()
    const tracked = this.tracked
    if (tracked) {
      const ready = this.ready
      for (let k = 0; k < ready.length; k++) {
        const i = (this.rr + k) % ready.length
        const host = ready[i]!
        if (!host.open(this.now)) continue
        const job = host.queue[host.head]!
        if (job.index >= limit) continue
        host.head++
        this.buffered--
        if (host.head === host.queue.length) {
          host.queue = []
          host.head = 0
          ready.splice(i, 1)
          this.rr = i
        } else {
          this.rr = i + 1
          // An origin that always has a backlog never empties its queue: the jobs it has started
          // are dropped from the front once they are 1,024 and half of it (amortised, and the
          // queue stays within twice the read-ahead), or a long batch would keep every request.
          if (host.head >= COMPACT_AFTER && host.head * 2 >= host.queue.length) {
            host.queue = host.queue.slice(host.head)
            host.head = 0
          }
        }
        return this.start(job)
      }
    }
    while (!this.exhausted && this.buffered < this.options.lookahead && this.pulled < limit) {
      const next = this.source.next()
      if (next.done === true) {
        this.exhausted = true
        break
      }
      const job = new Job(this.pulled++, next.value, tracked ? this.hostOf : noHost)
      const host = job.host
      if (host === undefined || (host.head === host.queue.length && host.open(this.now))) return this.start(job)
      if (host.queue.length === 0) this.ready.push(host)
      host.queue.push(job)
      this.buffered++
    }
    return this.idle()
  }

  /**
   * A request finished (either way). Wakes nobody: workers wait only when nothing is runnable,
   * a finish frees one slot, and the worker that finished calls `next()` right away and takes
   * it. Waking another would only make it look and sleep again (measured: a third of the
   * batch's cost with per-host limits).
   */
  finish(job: Job): void {
    const host = job.host
    if (host !== undefined) {
      // A redirected job waits for this slot: it gets it before any queued request.
      if (host.hops !== undefined && host.hops.length > 0) {
        this.leave(host)
        return
      }
      host.inFlight--
      if (host.inFlight === 0) this.settle(host)
    }
    this.version++
    // Except when the read-ahead is full: the finisher's take makes room to read more, which
    // may find work for another origin that a sleeping worker could do.
    if (this.buffered >= this.options.lookahead) this.changed(1)
  }

  /**
   * A job redirected to `url` goes on at that origin, under its limit: it gives back its slot,
   * then takes one at the new origin and calls `moved`, at once or when one is free (returning
   * how to stop waiting). It holds no slot while it waits, so origins that redirect to each
   * other cannot hold each other's slots. Same origin, or no per-host limit: `moved` at once.
   */
  moveTo(job: Job, url: string, moved: () => void): (() => void) | undefined {
    if (!this.tracked) {
      moved()
      return undefined
    }
    const from = job.host
    const to = this.hostOf(url)
    if (to === from) {
      moved()
      return undefined
    }
    // No slot held (a wait for one given up, then the item retried): only take one at `to`.
    if (from !== undefined) {
      job.host = undefined
      this.leave(from)
    }
    return this.enter(job, to, moved)
  }

  // `job`, holding no slot, takes one at `to`, now or after the redirected jobs waiting there.
  private enter(job: Job, to: Host, moved: () => void): (() => void) | undefined {
    if ((to.hops === undefined || to.hops.length === 0) && to.free) {
      to.inFlight++
      job.host = to
      moved()
      return undefined
    }
    const pending: PendingHop = { job, moved }
    to.hops ??= []
    to.hops.push(pending)
    // Given up (interrupted): it never took the slot, so `finish` frees none.
    return () => {
      const i = to.hops!.indexOf(pending)
      if (i >= 0) to.hops!.splice(i, 1)
      if (to.inFlight === 0) this.settle(to)
    }
  }

  /** A job gives back its slot at `host`: a redirected job waiting there takes it, else a worker may. */
  private leave(host: Host): void {
    this.version++
    host.inFlight--
    // Under the limit only: an adaptive one may have dropped below the requests in flight.
    const hop = host.free ? host.hops?.shift() : undefined
    if (hop === undefined) {
      if (host.inFlight === 0) this.settle(host)
      this.changed(1)
      return
    }
    host.inFlight++
    hop.job.host = host
    hop.moved()
  }

  /**
   * `host`'s adaptive limit rose by `n`: redirect hops waiting there take the new slots first
   * (nothing else would hand them one), then as many waiting workers may find work.
   */
  raised(host: Host, n: number): void {
    const hops = host.hops
    while (hops !== undefined && hops.length > 0 && host.free && n > 0) {
      const hop = hops.shift()!
      host.inFlight++
      hop.job.host = host
      hop.moved()
      n--
    }
    if (n > 0) this.changed(n)
  }

  /** `host` is paused until `until` (monotonic ms), unless already for longer: waiting workers look again then. */
  pause(host: Host, until: number): void {
    if (until > host.pausedUntil) host.pausedUntil = until
    if (this.wakeAt === 0 || until < this.wakeAt) this.wakeAt = until
  }

  /**
   * The origin of `url` is paused until `until` (a retry waits out its `Retry-After`): none of
   * its requests starts until then. A batch that tracked no origin does from now on.
   */
  pauseAt(url: string, until: number): void {
    this.tracked = true
    this.pause(this.hostOf(url), until)
  }

  /**
   * `job` gives back its slot at its origin while it waits (a retry's `Retry-After`): a
   * redirected job waiting there may take it. Returns that origin, for {@link reenter}.
   */
  vacate(job: Job): Host | undefined {
    const host = job.host
    if (host === undefined) return undefined
    job.host = undefined
    this.leave(host)
    return host
  }

  /**
   * `job`, which gave back its slot at `host` (see {@link vacate}), takes one there again, as a
   * redirected job does (see {@link moveTo}).
   */
  reenter(job: Job, host: Host, entered: () => void): (() => void) | undefined {
    // Forgotten meanwhile (idle once its pause ended): its origin's host now, as a new request's.
    return this.enter(job, this.hostByKey(host.key), entered)
  }

  /** The consumer took `n` results. */
  consume(n: number): void {
    this.consumed += n
    this.changed(n)
  }

  /** Suspends the calling worker until something changed since `version`. */
  wait(version: number, resume: () => void): (() => void) | undefined {
    if (version !== this.version) {
      resume()
      return undefined
    }
    this.waiters.push(resume)
    return () => {
      const i = this.waiters.indexOf(resume)
      if (i >= 0) this.waiters.splice(i, 1)
    }
  }

  /**
   * After a deadline, what never finished, in input order: the `started` jobs and the queued
   * ones, then the unread input, read only as the caller goes on (a fail-fast batch stops at
   * the first; an endless input must not be read to its end).
   */
  *rest(started: Iterable<Job>): Generator<Job> {
    // The started ones first: they already count in the window, so a queued job that waits for
    // room must not wait behind them (with buffer 0 they can fill it, and nobody would take them).
    yield* [...started].sort((a, b) => a.index - b.index)
    const queued: Array<Job> = []
    for (const host of this.hosts.values()) {
      for (let i = host.head; i < host.queue.length; i++) queued.push(host.queue[i]!)
    }
    yield* queued.sort((a, b) => a.index - b.index)
    for (;;) {
      const next = this.exhausted ? undefined : this.source.next()
      if (next === undefined || next.done === true) return
      yield new Job(this.pulled++, next.value, noHost)
    }
  }

  /** The batch ended: an input not read to its end is closed (a generator's `finally` runs). */
  close(): void {
    if (this.exhausted) return
    this.exhausted = true
    this.source.return?.()
  }

  /**
   * Reports a job that never started as finished after the deadline, if the window has room
   * for its result (as `next()` would have started it); false while the consumer must catch up.
   */
  startLate(job: Job): boolean {
    const { window, ordered } = this.options
    if (ordered ? job.index >= this.consumed + window : this.started - this.consumed >= window) return false
    this.started++
    return true
  }

  private start(job: Job): Job {
    if (job.host !== undefined) job.host.inFlight++
    this.started++
    return job
  }

  /**
   * `host` may have gone idle: then it is forgotten (a request to it later starts afresh, as the
   * first did), so that a batch's state does not grow with every origin it ever met. An adaptive
   * limit is learnt, so the last `MAX_IDLE_ORIGINS` idle ones are kept, and a paused one until
   * its pause ends (it comes back here when it next goes idle, or when another is forgotten).
   */
  private settle(host: Host): void {
    if (!host.idle) return
    if (host.adaptive === undefined) {
      this.forget(host)
      return
    }
    const idle = this.idleHosts
    idle.delete(host)
    idle.add(host)
    if (idle.size <= MAX_IDLE_ORIGINS) return
    const now = this.now()
    // A few at a time, a paused one moved to the back: left at the front, every origin going
    // idle would look at each paused one again (a crawler's many 429s, a minute each).
    let looked = 0
    for (const oldest of idle) {
      if (idle.size <= MAX_IDLE_ORIGINS || looked++ === SETTLE_LOOKS) break
      idle.delete(oldest)
      // Busy again since it went idle: it comes back when it next does.
      if (!oldest.idle) continue
      if (oldest.paused(now)) idle.add(oldest)
      else this.forget(oldest)
    }
  }

  /** Told of each adaptive origin forgotten (its metrics, see `Origins`). */
  onForget: ((host: Host) => void) | undefined = undefined

  private forget(host: Host): void {
    // The last origin met is kept: the next request is most likely its (one worker on one
    // origin goes idle between any two requests), and it is found without a parse.
    if (host === this.lastHost) return
    // A paused one is kept until its pause ends (see `nextWake`): its next request must wait for it.
    if (host.pausedUntil !== 0 && host.paused(this.now())) return
    if (this.hosts.get(host.key) !== host) return
    this.hosts.delete(host.key)
    if (host.adaptive !== undefined) this.onForget?.(host)
  }

  /**
   * The earliest end of a pause still running, or 0 (rare: when a pause ends). An idle origin
   * whose pause has ended is settled now: `forget` kept it for its pause.
   */
  private nextWake(): number {
    const now = this.now()
    let wake = 0
    for (const host of this.hosts.values()) {
      const until = host.pausedUntil
      if (until === 0) continue
      if (until > now) {
        if (wake === 0 || until < wake) wake = until
      } else {
        host.pausedUntil = 0
        this.settle(host)
      }
    }
    return wake
  }

  private idle(): typeof WAIT | typeof DONE {
    if (this.exhausted && this.buffered === 0) {
      // Nothing will ever be runnable again: let every waiting worker see DONE.
      this.changed(Number.POSITIVE_INFINITY)
      return DONE
    }
    return WAIT
  }

  private changed(n: number): void {
    this.version++
    if (this.waiters.length === 0) return
    const woken = n >= this.waiters.length ? this.waiters : this.waiters.slice(0, n)
    this.waiters = n >= this.waiters.length ? [] : this.waiters.slice(n)
    for (const resume of woken) resume()
  }

  /** The origin `url` belongs to, if the batch has seen it. */
  hostAt(url: string): Host | undefined {
    return this.hosts.get(originOf(url))
  }

  // The last origin seen, as its key: a URL spelled as its own key (lower case, no default
  // port, no user info), followed by the end of its authority, needs no parse.
  private lastKey = ""
  private lastHost: Host | undefined = undefined

  private readonly hostOf = (url: string): Host => {
    const last = this.lastKey
    if (last !== "" && url.startsWith(last)) {
      const c = url.charCodeAt(last.length)
      if (c === 47 /* / */ || c === 63 /* ? */ || c === 35 /* # */ || Number.isNaN(c)) return this.lastHost!
    }
    const key = originOf(url)
    const host = this.hostByKey(key)
    if (key !== "") {
      const previous = this.lastHost
      this.lastKey = key
      this.lastHost = host
      // Kept while it was the last met (see `forget`): an idle one not in `idleHosts` (a fixed
      // limit, or one that aged out of it meanwhile) would otherwise stay for the batch's life.
      if (previous !== undefined && previous !== host && previous.idle && !this.idleHosts.has(previous))
        this.forget(previous)
    }
    return host
  }

  private hostByKey(key: string): Host {
    let host = this.hosts.get(key)
    if (host === undefined) {
      host = new Host(key, this.options.perHost ?? Number.POSITIVE_INFINITY, this.options.adaptive)
      this.hosts.set(key, host)
    }
    return host
  }
}

const noHost = (): undefined => undefined

// A string first: the common case pays for no other check. A GET built in one step from the empty
// request (a GET), as `Http.*` build theirs: `HttpClientRequest.get` builds three.
const toRequest = (input: Target): HttpClientRequest.HttpClientRequest =>
  typeof input === "string" || input instanceof URL
    ? HttpClientRequest.setUrl(HttpClientRequest.empty, urlText(input))
    : HttpClientRequest.isHttpClientRequest(input)
      ? input
      : invalidItem(`not a string, URL or HttpClientRequest: ${describe(input)}`)

/**
 * An item a JavaScript caller got wrong (`null`, a number, `{}`): a request whose URL never
 * parses, even against a base URL (an IPv6 host that is not one), so it fails on its own with
 * the client's `InvalidUrlError`, as a malformed URL string does, and never sends anything.
 * Its URL says what was wrong with the item.
 */
const invalidItem = (reason: string): HttpClientRequest.HttpClientRequest =>
  HttpClientRequest.get(`http://[invalid Fanout item: ${reason}]/`)

const describe = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "an array" : typeof value
