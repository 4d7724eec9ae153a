// `Blocking.runAll` / `runAllSettled` on an executor with a `submit` fast path: one fiber for the
// whole batch, not one per task. `Effect.forEach(xs, run, { concurrency: "unbounded" })` forks
// every fiber in one synchronous loop (Effect 4.1's forEach starts each child at once), and each
// waiting fiber holds its frames until its reply: at 100,000 tasks that is ~0.5 s of blocked
// event loop and young-generation collections of 50-190 ms that copy what is still alive. Here
// a submitted task is a `Call` record (its span still made only when a thread takes it), at most
// a window of them exist at once, and each reply lands in the results array; the batch's fiber
// resumes once, when the last one lands.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as Result from "effect/Result"
import { Call } from "./call.ts"
import * as Codec from "./codec.ts"
import type { BlockingError, Executor, Task } from "./model.ts"
import { InvalidPayloadError } from "./model.ts"

/** What one batch needs to know besides its payloads. */
export interface Plan<Payload, Success, Failure> {
  readonly task: Task<Payload, Success, Failure>
  readonly timeoutMillis: number | undefined
  readonly queueTimeoutMillis: number | undefined
  /** Tasks submitted and not yet answered, at most (`Infinity`: all at once). */
  readonly window: number
  /** Keep going past failures (`runAllSettled`) rather than stop at the first (`runAll`). */
  readonly settled: boolean
}

/** The batch's outcome: successes in input order, or one `Result` per payload when settled. */
export type Outcome<Success, Failure> = Array<Success> | Array<Result.Result<Success, Failure | BlockingError>>

/** Runs the batch on `submit`; resumes the caller once, with every result or the first failure. */
export function run<Payload, Success, Failure>(
  submit: NonNullable<Executor["submit"]>,
  plan: Plan<Payload, Success, Failure> & { readonly settled: false },
  payloads: ReadonlyArray<Payload>
): Effect.Effect<Array<Success>, Failure | BlockingError>
export function run<Payload, Success, Failure>(
  submit: NonNullable<Executor["submit"]>,
  plan: Plan<Payload, Success, Failure> & { readonly settled: true },
  payloads: ReadonlyArray<Payload>
): Effect.Effect<Array<Result.Result<Success, Failure | BlockingError>>>
export function run<Payload, Success, Failure>(
  submit: NonNullable<Executor["submit"]>,
  plan: Plan<Payload, Success, Failure>,
  payloads: ReadonlyArray<Payload>
): Effect.Effect<Outcome<Success, Failure>, Failure | BlockingError> {
  return Effect.withFiber((fiber) =>
    Effect.callback<Outcome<Success, Failure>, Failure | BlockingError>((resume) => {
      const batch = new Batch(submit, plan, payloads, fiber, resume)
      batch.fill()
      return Effect.sync(() => batch.interrupt())
    })
  )
}

/** Payloads submitted in one go before the batch lets the event loop run. */
const SLICE = 2048

type Resume<Success, Failure> = (result: Effect.Effect<Outcome<Success, Failure>, Failure | BlockingError>) => void

// The one owner of a batch's state: which payload goes next, which calls wait, what landed.
class Batch<Payload, Success, Failure> {
  private readonly results: Array<unknown>
  private readonly waiting = new Set<Call>()
  private readonly submit: NonNullable<Executor["submit"]>
  private readonly plan: Plan<Payload, Success, Failure>
  private readonly payloads: ReadonlyArray<Payload>
  private readonly fiber: Fiber.Fiber<unknown, unknown>
  private readonly resume: Resume<Success, Failure>
  private next = 0
  private done = false
  /** Inside `fill`: a reply that lands synchronously must not start a second loop. */
  private filling = false
  /** The rest of the payloads are to be submitted by a scheduled task. */
  private sliced = false

  constructor(
    submit: NonNullable<Executor["submit"]>,
    plan: Plan<Payload, Success, Failure>,
    payloads: ReadonlyArray<Payload>,
    fiber: Fiber.Fiber<unknown, unknown>,
    resume: Resume<Success, Failure>
  ) {
    this.submit = submit
    this.plan = plan
    this.payloads = payloads
    this.fiber = fiber
    this.resume = resume
    this.results = new Array(payloads.length)
  }

  /**
   * Submits payloads until the window is full or none is left, `SLICE` at a time: the rest
   * follows in a later task of the fiber's scheduler, so 100,000 payloads do not hold the event
   * loop (and the replies of those already running) for the whole submission. Ends an empty batch.
   */
  fill(): void {
    if (this.filling || this.sliced) return
    this.filling = true
    const { task, window } = this.plan
    const codecs = Codec.codecsOf(task)
    const end = this.next + SLICE
    while (!this.done && this.next < this.payloads.length && this.waiting.size < window) {
      if (this.next === end) {
        this.sliced = true
        this.fiber.currentDispatcher.scheduleTask(() => {
          this.sliced = false
          this.fill()
        }, 0)
        break
      }
      const index = this.next++
      const prepared = Codec.preparePayload(task, this.payloads[index])
      if (prepared instanceof InvalidPayloadError) {
        this.land(index, Exit.fail(prepared))
        continue
      }
      const call = new Call(
        task,
        prepared.payload,
        prepared.transfer,
        this.plan.timeoutMillis,
        this.plan.queueTimeoutMillis,
        this.fiber,
        codecs.spanName,
        codecs.spanOptions.attributes
      )
      this.waiting.add(call)
      call.start(this.submit, (result) => {
        this.waiting.delete(call)
        this.land(index, result as Exit.Exit<Success, Failure | BlockingError>)
      })
    }
    this.filling = false
    if (!this.done && this.allLanded()) this.finish()
  }

  /** The batch's fiber was interrupted: every waiting call is cancelled (its span ended). */
  interrupt(): void {
    this.done = true
    for (const call of this.waiting) call.interrupt()
    this.waiting.clear()
  }

  // A reply decodes to an Exit (Effect.succeed / fail are Exits in Effect 4).
  private land(index: number, exit: Exit.Exit<Success, Failure | BlockingError>): void {
    if (this.done) return
    if (Exit.isSuccess(exit)) {
      this.results[index] = this.plan.settled ? Result.succeed(exit.value) : exit.value
    } else if (this.plan.settled) {
      this.results[index] = Result.fail(failureOf(exit.cause))
    } else {
      // Fail fast: the first failure ends the batch and cancels what still runs.
      this.interrupt()
      this.resume(Exit.failCause(exit.cause))
      return
    }
    if (this.allLanded()) this.finish()
    else this.fill()
  }

  /** Every payload was taken, and none waits: each one's outcome has landed. */
  private allLanded(): boolean {
    return this.next === this.payloads.length && this.waiting.size === 0
  }

  private finish(): void {
    this.done = true
    this.resume(Effect.succeed(this.results as Outcome<Success, Failure>))
  }
}

const failureOf = <E>(cause: Cause.Cause<E>): E => {
  const error = Cause.findErrorOption(cause)
  // A decoded reply only ever fails with a typed error (see codec.ts decodeReply).
  if (error._tag === "None") throw new Error(`Blocking batch: a reply decoded to ${Cause.pretty(cause)}`)
  return error.value
}
