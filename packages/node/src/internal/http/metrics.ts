// The direct client's HTTP metrics. A request must not pay for five metric updates (with
// attributes, each one merges a context and looks its series up: ~3 µs for the lot, several
// percent of a small request), so each origin keeps plain counters that are published to the
// metrics at most every PUBLISH_MS while its requests flow (a timer publishes what a stall left
// unpublished), and at once whenever its last request in flight ends: after a batch, the
// metrics are exact. The in-flight count is one per series (registry, attributes and origin),
// shared by every client that records there, so each publication sets the gauge to the total
// (see `InFlight`). The duration histogram, without attributes, is exact at every read: its
// state is ours (see `Durations`).
import * as Context from "effect/Context"
import * as Metric from "effect/Metric"

const DURATION_BOUNDARIES = Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 18 })

/** The metrics, as `NodeHttpClient.metrics` documents them. */
export const metrics = {
  requests: Metric.counter("volley_http_requests_total", {
    description: "Requests that ended, by origin and status_class (1xx-5xx, or error: no response)"
  }),
  duration: Metric.histogram("volley_http_request_duration_ms", {
    description: "Time from sending a request to the end of its response body or its failure, ms",
    boundaries: DURATION_BOUNDARIES
  }),
  inFlight: Metric.gauge("volley_http_in_flight", {
    description: "Requests sent whose response has not ended, by origin"
  }),
  bytesRead: Metric.counter("volley_http_body_bytes_read_total", {
    description: "Response body bytes received off the wire (before decoding), by origin"
  })
}

const PUBLISH_MS = 100

/**
 * Idle origins whose meter a client keeps (see `Meters`): at most ~3.5 MB. A meter is remade for an
 * origin met again past them (about 10 µs, measured with 1,000 origins taking turns), so the bound
 * is set for crawls that take turns among up to a thousand origins.
 */
export const MAX_IDLE_METERS = 1024
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"] as const

/** One origin's counters since they were last published. */
export class OriginMeter {
  readonly origin: string
  readonly context: Context.Context<never>
  readonly classes: Array<number> = [0, 0, 0, 0, 0, 0]
  readonly requestSeries: ReadonlyArray<Metric.Metric<number, unknown>>
  readonly inFlightSeries: Metric.Metric<number, unknown>
  readonly bytesSeries: Metric.Metric<number, unknown>
  /** This client's requests in flight at the origin. */
  inFlight = 0
  bytes = 0
  publishedAt = 0
  /** The gauge's count: every client's requests in flight in the series. */
  private shared: InFlight
  /** Forgotten by its client (see `Meters`): holds no `shared` until its next request. */
  private released = false
  /** A publication scheduled for what start/end left unpublished (a stall publishes nothing). */
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private closed = false

  readonly durations: Durations
  /** The origin's last request in flight ended (its counters are published). */
  private readonly onIdle: (meter: OriginMeter) => void

  constructor(
    origin: string,
    context: Context.Context<never>,
    durations: Durations,
    onIdle: (meter: OriginMeter) => void = () => {}
  ) {
    this.origin = origin
    this.onIdle = onIdle
    this.context = context
    this.durations = durations
    this.shared = InFlight.of(context, origin)
    this.requestSeries = CLASSES.map((statusClass) =>
      Metric.withAttributes(metrics.requests, { origin, status_class: statusClass })
    )
    this.inFlightSeries = Metric.withAttributes(metrics.inFlight, { origin })
    this.bytesSeries = Metric.withAttributes(metrics.bytesRead, { origin })
  }

  /** A request was sent; returns its start time. */
  start(): number {
    // A request on a meter its client forgot meanwhile (one taken, then started later).
    if (this.released) {
      this.released = false
      this.shared = InFlight.of(this.context, this.origin)
    }
    this.inFlight++
    this.shared.count++
    const now = performance.now()
    if (now - this.publishedAt >= PUBLISH_MS) this.publish(now)
    else if (this.timer === undefined) this.schedule(now)
    return now
  }

  /** A request ended with `status` (0: no response), after `bytes` of body. */
  end(started: number, status: number, bytes: number): void {
    const now = performance.now()
    this.durations.add(now - started)
    this.inFlight--
    this.shared.count--
    this.bytes += bytes
    this.classes[status === 0 ? 5 : Math.min(Math.max(Math.floor(status / 100), 1), 5) - 1]!++
    if (this.inFlight === 0) {
      this.publish(now)
      this.onIdle(this)
    } else if (now - this.publishedAt >= PUBLISH_MS) this.publish(now)
    else if (this.timer === undefined) this.schedule(now)
  }

  /** Its client forgets it, with nothing in flight and everything published. */
  release(): void {
    if (this.released) return
    this.released = true
    this.shared.release()
  }

  /** The client's scope closed: publishes what is pending, and schedules nothing from now on. */
  close(): void {
    this.closed = true
    if (this.timer !== undefined) this.publish(performance.now())
  }

  // Unref'd: metrics never keep the process alive. After close, publishes at once instead.
  private schedule(now: number): void {
    if (this.closed) {
      this.publish(now)
      return
    }
    this.timer = setTimeout(this.onTimer, PUBLISH_MS - (now - this.publishedAt))
    this.timer.unref()
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    this.publish(performance.now())
  }

  private publish(now: number): void {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    this.publishedAt = now
    this.durations.ensureRegistered()
    for (let i = 0; i < CLASSES.length; i++) {
      if (this.classes[i] === 0) continue
      this.requestSeries[i]!.updateUnsafe(this.classes[i]!, this.context)
      this.classes[i] = 0
    }
    this.inFlightSeries.updateUnsafe(this.shared.count, this.context)
    if (this.bytes > 0) this.bytesSeries.updateUnsafe(this.bytes, this.context)
    this.bytes = 0
  }
}

/**
 * One meter per origin with requests in flight, and for the last `MAX_IDLE_METERS` origins to go
 * idle: a client that meets many origins (a crawler) must not keep one for each (3.4 KB apiece)
 * for its life. A meter forgotten has published everything (`end`); the origin's next request
 * gets a new one, on the same series and in-flight count.
 */
export class Meters {
  readonly context: Context.Context<never>
  readonly durations: Durations
  readonly byOrigin = new Map<string, OriginMeter>()
  /** Meters with no request in flight, least recently idle first. */
  private readonly idle = new Set<OriginMeter>()
  private lastIdle: OriginMeter | undefined = undefined
  // The last origin asked for: consecutive requests mostly go to one origin, and comparing two
  // equal strings is cheaper than hashing the new one for the map.
  private last: OriginMeter | undefined = undefined
  private lastOrigin = ""
  constructor(context: Context.Context<never>) {
    this.context = context
    this.durations = Durations.of(context)
  }
  of(origin: string): OriginMeter {
    if (origin === this.lastOrigin && this.last !== undefined) return this.last
    let meter = this.byOrigin.get(origin)
    if (meter === undefined) {
      meter = new OriginMeter(origin, this.context, this.durations, this.idled)
      this.byOrigin.set(origin, meter)
    }
    this.last = meter
    this.lastOrigin = origin
    return meter
  }
  private readonly idled = (meter: OriginMeter): void => {
    // One origin's requests one after the other: nothing to move.
    if (meter === this.lastIdle) return
    this.lastIdle = meter
    const idle = this.idle
    idle.delete(meter)
    idle.add(meter)
    if (idle.size <= MAX_IDLE_METERS) return
    for (const oldest of idle) {
      if (idle.size <= MAX_IDLE_METERS) break
      idle.delete(oldest)
      // Busy again since: it comes back when it next goes idle.
      if (oldest.inFlight > 0) continue
      // The one asked for last is forgotten too (kept, it was in no list any more and stayed for
      // good: one more each time the last origin asked for went idle first, as a batch's last
      // request may): its origin's next request gets a new meter, as any other's.
      if (oldest === this.last) {
        this.last = undefined
        this.lastOrigin = ""
      }
      if (this.byOrigin.get(oldest.origin) === oldest) this.byOrigin.delete(oldest.origin)
      oldest.release()
    }
  }

  /** The client's scope closed: see `OriginMeter.close`. */
  close(): void {
    for (const meter of this.byOrigin.values()) {
      meter.close()
      if (meter.inFlight === 0) meter.release()
    }
  }
}

/**
 * The requests in flight in one series of `volley_http_in_flight` (registry, the context's
 * metric attributes and the origin), counted by every client that records there: two clients
 * (two layers, a `NodeProxy` and a direct client) publishing each its own count would set the
 * one series to whichever published last.
 */
export class InFlight {
  count = 0
  /** The meters that hold it: with none, and none in flight, it is dropped from `byKey`. */
  private refs = 0
  private readonly key: string
  private readonly byKey: Map<string, InFlight>

  private constructor(key: string, byKey: Map<string, InFlight>) {
    this.key = key
    this.byKey = byKey
  }

  release(): void {
    this.refs--
    if (this.refs === 0 && this.count === 0 && this.byKey.get(this.key) === this) this.byKey.delete(this.key)
  }

  static of(context: Context.Context<never>, origin: string): InFlight {
    const registry = Context.get(context, Metric.MetricRegistry)
    // The attributes as Effect merges them for the series (the context's, then `origin`),
    // sorted as its series key sorts them.
    const attributes = { ...Context.get(context, Metric.CurrentMetricAttributes), origin }
    const key = JSON.stringify(Object.entries(attributes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    const inFlight = perSeries(inFlightSeries, registry, key, (byKey) => new InFlight(key, byKey))
    inFlight.refs++
    return inFlight
  }
}

const inFlightSeries = new WeakMap<Metric.MetricRegistry, Map<string, InFlight>>()

/**
 * The duration histogram's state, updated by each request directly and registered as the
 * metric's hooks (`Metric.registerUnsafe`), so a read (`Metric.value`, a snapshot, an exporter)
 * sees every request at once. Going through `updateUnsafe` looks the series up in the context
 * and the registry on every update: 0.25-0.4 µs a request, 7-10% of the plain path's JavaScript.
 * One per series (registry and metric attributes), shared by every client that records there.
 * A series removed from its registry (`Metric.remove`) starts again empty, registered anew at
 * the next publication of any origin's counters (see `OriginMeter.publish`) or client build.
 */
export class Durations {
  readonly boundaries = Float64Array.from([...DURATION_BOUNDARIES].sort((a, b) => a - b))
  readonly counts = new Uint32Array(this.boundaries.length + 1)
  count = 0
  sum = 0
  min = Number.MAX_VALUE
  max = -Number.MAX_VALUE
  private readonly context: Context.Context<never>
  private readonly registry: Metric.MetricRegistry
  /** The series' key in the registry (Effect's own, found by registering). */
  private readonly key: string
  /** What the registry holds for the series while it is ours. */
  private entry: Metric.Metric.Metadata<number, Metric.HistogramState> | undefined = undefined

  private constructor(context: Context.Context<never>, registry: Metric.MetricRegistry, key: string) {
    this.context = context
    this.registry = registry
    this.key = key
  }

  static of(context: Context.Context<never>): Durations {
    const registry = Context.get(context, Metric.MetricRegistry)
    const key = seriesKey(registry, context)
    const durations = perSeries(registered, registry, key, () => new Durations(context, registry, key))
    durations.ensureRegistered()
    return durations
  }

  /** Registers the hooks unless the registry still holds them; a removed series starts empty. */
  ensureRegistered(): void {
    if (this.entry !== undefined && this.registry.get(this.key) === this.entry) return
    if (this.entry !== undefined) this.reset()
    Metric.registerUnsafe(metrics.duration, this.context, {
      get: () => this.state(),
      update: (value) => this.add(value),
      modify: (value) => this.add(value)
    })
    this.entry = this.registry.get(this.key)
  }

  add(value: number): void {
    const boundaries = this.boundaries
    // The first boundary >= value (the last bucket: above every boundary), as Effect's own.
    let from = 0
    let to = boundaries.length
    while (from < to) {
      const mid = (from + to) >>> 1
      if (value <= boundaries[mid]!) to = mid
      else from = mid + 1
    }
    this.counts[from]!++
    this.count++
    this.sum += value
    if (value < this.min) this.min = value
    if (value > this.max) this.max = value
  }

  state(): Metric.HistogramState {
    const buckets: Array<[number, number]> = []
    let cumulated = 0
    for (let i = 0; i < this.boundaries.length; i++) {
      cumulated += this.counts[i]!
      buckets.push([this.boundaries[i]!, cumulated])
    }
    return { buckets, count: this.count, min: this.min, max: this.max, sum: this.sum }
  }

  private reset(): void {
    this.counts.fill(0)
    this.count = 0
    this.sum = 0
    this.min = Number.MAX_VALUE
    this.max = -Number.MAX_VALUE
  }
}

// The registry key of the duration series in `context`, as Effect computes it (attributes
// included, in its order): found by registering a probe, and what the probe replaced put back.
const seriesKey = (registry: Metric.MetricRegistry, context: Context.Context<never>): string => {
  const before = new Map(registry)
  const probe = (): Metric.HistogramState => ({ buckets: [], count: 0, min: 0, max: 0, sum: 0 })
  Metric.registerUnsafe(metrics.duration, context, { get: probe, update: () => {}, modify: () => {} })
  let key = ""
  for (const [name, metadata] of registry) {
    if (metadata.hooks.get === probe) key = name
  }
  const replaced = before.get(key)
  if (replaced === undefined) registry.delete(key)
  else registry.set(key, replaced)
  return key
}

const registered = new WeakMap<Metric.MetricRegistry, Map<string, Durations>>()

// The value kept for one series of a registry (by its key), made on first use: one per series,
// shared by every client that records there.
const perSeries = <A>(
  store: WeakMap<Metric.MetricRegistry, Map<string, A>>,
  registry: Metric.MetricRegistry,
  key: string,
  make: (byKey: Map<string, A>) => A
): A => {
  let byKey = store.get(registry)
  if (byKey === undefined) {
    byKey = new Map()
    store.set(registry, byKey)
  }
  let value = byKey.get(key)
  if (value === undefined) {
    value = make(byKey)
    byKey.set(key, value)
  }
  return value
}
