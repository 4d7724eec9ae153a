// One `Blocking.run` call as its executor sees it (a `Blocking.Request`), made cheap to hold while
// it waits: its span is made when the executor first reads `span` (the pool does so when a thread
// takes the task), not when the call starts. A call queued behind 100,000 others then holds this
// record, not a span with its attribute map and ids (~0.8 KB each), which made the unbounded
// submit forms (`Effect.forEach` / `Effect.all` with `concurrency: "unbounded"`) spend their time
// in the garbage collector. The span still starts when the call did (its start time is taken
// then), is a child of the caller's span, and ends with the call's exit.
//
// Only used while the tracer is enabled; the span is made as Effect's `makeSpanUnsafe` does (the
// fiber's tracer, parent, links, annotations, trace level and clock), from public references.
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as References from "effect/References"
import * as Tracer from "effect/Tracer"
import * as Codec from "./codec.ts"
import type * as Blocking from "./model.ts"

// `Effect.callback`'s resume for whatever the caller's types are: the decoded reply has them.
// biome-ignore lint/suspicious/noExplicitAny: Call is not generic over the task's types
type Resume = (result: Effect.Effect<any, any>) => void

export class Call implements Blocking.Request, Blocking.Receiver {
  readonly task: Blocking.AnyTask
  readonly payload: unknown
  readonly transfer: ReadonlyArray<Transferable>
  readonly timeoutMillis: number | undefined
  readonly queueTimeoutMillis: number | undefined
  private readonly fiber: Fiber.Fiber<unknown, unknown>
  private readonly spanName: string
  private readonly attributes: Record<string, unknown>
  private readonly startTime: bigint
  private opened: Tracer.Span | undefined = undefined

  constructor(
    task: Blocking.AnyTask,
    payload: unknown,
    transfer: ReadonlyArray<Transferable>,
    timeoutMillis: number | undefined,
    queueTimeoutMillis: number | undefined,
    fiber: Fiber.Fiber<unknown, unknown>,
    spanName: string,
    attributes: Record<string, unknown>
  ) {
    this.task = task
    this.payload = payload
    this.transfer = transfer
    this.timeoutMillis = timeoutMillis
    this.queueTimeoutMillis = queueTimeoutMillis
    this.fiber = fiber
    this.spanName = spanName
    this.attributes = attributes
    this.startTime = now(fiber)
  }

  get span(): Tracer.Span {
    if (this.opened === undefined) this.opened = this.open()
    return this.opened
  }

  /** Set by `Blocking.run` when the executor has a `submit` fast path. */
  submit: Blocking.Executor["submit"] = undefined
  /** Where the decoded outcome goes, and how to cancel the executor's work. */
  private resume: Resume | undefined = undefined
  private cancel: (() => void) | undefined = undefined
  private interrupted = false

  /** Hands the call to `submit`; `resume` gets its decoded outcome, once. */
  start(submit: NonNullable<Blocking.Executor["submit"]>, resume: Resume): void {
    this.resume = resume
    const cancel = submit(this, this.fiber.getRef(Clock.Clock), this)
    // Interrupted while `submit` ran (it may answer another call of the same batch at once,
    // which can end the batch): cancelled as soon as there is something to cancel.
    if (this.interrupted) cancel?.()
    else this.cancel = cancel
  }

  /** `Effect.callback`'s register for the `submit` fast path (`submit` set first). */
  register(resume: Resume): Effect.Effect<void> | undefined {
    this.start(this.submit!, resume)
    return this.cancel === undefined ? undefined : Effect.sync(this.interrupt.bind(this))
  }

  // Receiver, called once by the executor's `submit`. Methods, not arrow properties: two closures per call is what this class saves.
  succeed(reply: Blocking.Reply): void {
    this.settle(Codec.decodeReply(this.task, reply))
  }

  fail(error: Blocking.BlockingError): void {
    this.settle(Exit.fail(error))
  }

  private settle(result: Effect.Effect<unknown, unknown>): void {
    // decodeReply returns an Exit (Effect.succeed / Effect.fail are Exits in Effect 4).
    this.end(Exit.isExit(result) ? result : Exit.void)
    this.resume!(result)
  }

  /** The caller was interrupted before the executor answered: ends the span, cancels the executor's work. */
  interrupt(): void {
    this.interrupted = true
    this.end(Exit.interrupt())
    this.cancel?.()
  }

  /** Ends the span (making it first if no executor read it: a call that failed or was interrupted before it ran). */
  end(exit: Exit.Exit<unknown, unknown>): void {
    const span = this.span
    if (span.status._tag !== "Ended") span.end(now(this.fiber), exit)
  }

  private open(): Tracer.Span {
    const fiber = this.fiber
    // Tracing turned off (`Effect.withTracerEnabled(false)`): no span reaches the tracer, as with
    // Effect's own spans (`Blocking.run` then never makes a Call, but a batch always does).
    if (!fiber.cache.tracerEnabled) return noopSpan(this.spanName, propagated(fiber.cache.span))
    const parent = propagated(fiber.cache.span)
    const level = fiber.getRef(Tracer.CurrentTraceLevel)
    const links = fiber.getRef(References.TracerSpanLinks)
    const span = (fiber.cache.tracer ?? Tracer.nativeTracer).span({
      name: this.spanName,
      parent,
      annotations: emptyAnnotations,
      links: links.length === 0 ? [] : links.slice(),
      startTime: this.startTime,
      kind: "internal",
      root: false,
      sampled:
        Option.isSome(parent) && parent.value.sampled === false
          ? false
          : !LogLevel.isGreaterThan(fiber.getRef(Tracer.MinimumTraceLevel), level)
    })
    const fromEnv = fiber.getRef(References.TracerSpanAnnotations)
    for (const key in fromEnv) span.attribute(key, fromEnv[key])
    for (const key in this.attributes) span.attribute(key, this.attributes[key])
    return span
  }
}

const emptyAnnotations = Context.empty()

/** A span that records nothing and is ended already, as Effect makes one when tracing is off. */
const noopSpan = (name: string, parent: Option.Option<Tracer.AnySpan>): Tracer.Span => ({
  _tag: "Span",
  name,
  spanId: "noop",
  traceId: "noop",
  parent,
  annotations: emptyAnnotations,
  status: { _tag: "Ended", startTime: 0n, endTime: 0n, exit: Exit.void },
  attributes: new Map(),
  links: [],
  sampled: false,
  kind: "internal",
  end: () => {},
  attribute: () => {},
  event: () => {},
  addLinks: () => {}
})

const now = (fiber: Fiber.Fiber<unknown, unknown>): bigint =>
  fiber.getRef(References.TracerTimingEnabled) ? fiber.getRef(Clock.Clock).currentTimeNanosUnsafe() : 0n

/** The nearest ancestor span that does not disable propagation. */
const propagated = (span: Tracer.AnySpan | undefined): Option.Option<Tracer.AnySpan> => {
  for (let current = span; current !== undefined; ) {
    if (!Context.get(current.annotations, Tracer.DisablePropagation)) return Option.some(current)
    current = current._tag === "Span" ? Option.getOrUndefined(current.parent) : undefined
  }
  return Option.none()
}
