/**
 * Blocking work on a cluster: `ClusterBlocking.layer` provides core's `Blocking.BlockingExecutor`,
 * so `Blocking.run(task, payload)` is unchanged, and each call runs on some runner's own executor
 * (its worker-thread pool, `@volley/node`'s `NodeBlocking`).
 *
 * - **Registration**: runners list the tasks they run in {@link layerRunner}; a call is matched by
 *   the task's name and its module's file name. A task a runner does not know fails with
 *   `Blocking.TaskNotFoundError` naming that runner.
 * - **Delivery**: calls are persisted before they run (at-least-once): a call whose runner dies
 *   runs again on another one, so tasks should be safe to repeat.
 * - **Payloads**: payloads and results are stored as JSON: use task schemas whose encoded form is
 *   JSON (numbers, strings, arrays, plain objects), not `Uint8Array`; a payload that is not fails
 *   with `Blocking.InvalidPayloadError` naming the field before anything is stored, and a result
 *   (or typed failure) that is not fails with `Blocking.InvalidResultError` naming the field (the
 *   task has run by then). Replies travel as JSON gives them back (an object's `undefined` fields
 *   dropped), so a task that throws a value that is not an `Error` fails with
 *   `Blocking.HandlerError`, as on one machine.
 * - **Timeouts**: `timeout` is applied by the runner's executor, from when the task starts there.
 *   `queueTimeout` is sent to the runner, whose executor applies it to its own queue. The client
 *   cannot see when a runner starts a call, so it also bounds the wait for the reply: a call with
 *   no reply `queueTimeout + timeout` after it was sent (`queueTimeout` alone for a call without a
 *   `timeout`) fails with `Blocking.TaskTimeoutError` (`phase: "queued"`) and is cancelled. A call
 *   with a `queueTimeout` and no `timeout` must therefore finish within `queueTimeout`.
 * - **No runner**: a call no runner takes (none running, or none for its shard) is not an error:
 *   it stays stored and runs when a runner takes its shard, unless `queueTimeout` bounds the wait.
 * - **Cluster failures** (storage unreachable) fail a call with `Blocking.WorkerDiedError` whose
 *   `detail` names them.
 *
 * @since 0.1.0
 */
import { Blocking, Options as Validate } from "@volley/core"
import * as MessageRetention from "effect/cluster/MessageRetention"
import type * as MessageStorage from "effect/cluster/MessageStorage"
import type * as Sharding from "effect/cluster/Sharding"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { asJson, maxStoredBytes, notJson, tooLargeReason } from "./internal/json.ts"
import { TaskEntity } from "./internal/model.ts"

/**
 * Options of {@link layer}.
 *
 * @example
 * ```ts
 * import { ClusterBlocking } from "@volley/cluster"
 *
 * const options: ClusterBlocking.Options = { buckets: 256 }
 * const Executor = ClusterBlocking.layer(options)
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Entity ids a task's calls are spread over (each lives on one runner, chosen by its shard):
   * more buckets spread calls over more runners.
   * @default 64
   */
  readonly buckets?: number | undefined
}

/**
 * A `Blocking.BlockingExecutor` that runs every call on the cluster's runners. Needs a cluster
 * member (`ClusterRunner.layerClient` or `ClusterRunner.layer`).
 * A `buckets` that is not an integer >= 1 fails the layer with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Blocking } from "@volley/core"
 * import { ClusterBlocking, ClusterRunner } from "@volley/cluster"
 * import { Effect, Layer, Schema } from "effect"
 *
 * const square = Blocking.task({
 *   name: "square",
 *   module: import.meta.url,
 *   payload: Schema.Number,
 *   success: Schema.Number,
 *   handler: (n) => n * n
 * })
 *
 * const program = Blocking.run(square, 7).pipe(
 *   Effect.provide(
 *     ClusterBlocking.layer().pipe(
 *       Layer.provide(ClusterRunner.layerClient({ database: { url: "postgres://postgres@127.0.0.1:5432/volley" } }))
 *     )
 *   )
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<Blocking.BlockingExecutor, Validate.InvalidOptionsError, Sharding.Sharding> =>
  Layer.effect(
    Blocking.BlockingExecutor,
    Effect.gen(function* () {
      // Checked, as every option is: NaN sent every call to one entity, "NaN/…", and a fraction
      // or 0 was quietly rounded.
      const buckets = yield* Validate.positiveInt("buckets", options.buckets ?? 64)
      const client = yield* TaskEntity.client
      let next = 0
      return Blocking.BlockingExecutor.of({
        execute: (request) => {
          const task = request.task
          if (task.module === undefined) {
            return Effect.fail(
              new Blocking.TaskNotFoundError({
                task: task.name,
                module: "(none)",
                reason: "the task has no module URL; pass `module: import.meta.url` to Blocking.task"
              })
            )
          }
          const unstorable = notJson(request.payload)
          if (unstorable !== undefined) {
            return Effect.fail(
              new Blocking.InvalidPayloadError({
                task: task.name,
                reason: `${unstorable} cannot be stored as JSON; use a Schema whose encoded form is JSON (e.g. base64 for bytes)`
              })
            )
          }
          const stored = asJson(request.payload)
          if (stored.bytes > maxStoredBytes) {
            return Effect.fail(
              new Blocking.InvalidPayloadError({ task: task.name, reason: tooLargeReason("the payload", stored.bytes) })
            )
          }
          const bucket = next++ % buckets
          const queueTimeoutMillis = request.queueTimeoutMillis
          const call = client(`${task.name}/${bucket}`)
            .RunTask(
              {
                id: crypto.randomUUID(),
                module: task.module,
                task: task.name,
                // As JSON gives it back (an object's undefined fields dropped), which is how it is
                // documented to travel: such a field reached the runner as a MalformedMessage defect.
                payload: JSON.parse(stored.text),
                timeoutMillis: request.timeoutMillis ?? null
              },
              queueTimeoutMillis === undefined
                ? undefined
                : { headers: { [queueTimeoutHeader]: String(queueTimeoutMillis) } }
            )
            .pipe(
              Effect.map((reply) => reply as Blocking.Reply),
              Effect.catchIf(
                (error): error is Exclude<typeof error, Blocking.BlockingError> => !Blocking.isBlockingError(error),
                (error) =>
                  Effect.fail(
                    new Blocking.WorkerDiedError({
                      task: task.name,
                      reason: "exit",
                      exitCode: undefined,
                      detail: `the cluster could not run the call: ${error._tag}: ${error.message}`
                    })
                  )
              )
            )
          if (queueTimeoutMillis === undefined) return call
          // The reply is the only news a client gets of a call, so this bounds the wait for it: a
          // call a runner started within queueTimeout has replied by queueTimeout + timeout. Giving
          // up interrupts the call, which Effect's cluster stores, so a runner that takes it later
          // cancels it rather than running it for nobody.
          return Effect.timeoutOrElse(call, {
            duration: queueTimeoutMillis + (request.timeoutMillis ?? 0),
            orElse: () =>
              Effect.fail(
                new Blocking.TaskTimeoutError({ task: task.name, phase: "queued", timeoutMillis: queueTimeoutMillis })
              )
          })
        }
      })
    })
  )

/**
 * Runs blocking calls on this runner with the `Blocking.BlockingExecutor` you provide (for
 * example `NodeBlocking.layer()`), for the listed tasks. Add it next to `ClusterRunner.layer`.
 * Entries of `tasks` that are not tasks are skipped (pass a tasks module's exports as they are,
 * `Object.values(Tasks)`); a task defined without a module URL, or a `retention` that is not a
 * duration >= 0, fails the layer with `InvalidOptionsError`.
 *
 * @example
 * ```ts
 * import { Blocking } from "@volley/core"
 * import { ClusterBlocking, ClusterRunner } from "@volley/cluster"
 * import { NodeBlocking, NodeHttpClient } from "@volley/node"
 * import { Layer, Schema } from "effect"
 *
 * // In a module of its own, imported by runners and clients alike.
 * const square = Blocking.task({
 *   name: "square",
 *   module: import.meta.url,
 *   payload: Schema.Number,
 *   success: Schema.Number,
 *   handler: (n) => n * n
 * })
 *
 * const runner = ClusterBlocking.layerRunner({ tasks: [square] }).pipe(
 *   Layer.provide(NodeBlocking.layer()),
 *   Layer.provideMerge(ClusterRunner.layer({ port: 24001, database: { url: "postgres://127.0.0.1/volley" } })),
 *   Layer.provide(NodeHttpClient.layer())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerRunner = (options: {
  readonly tasks: ReadonlyArray<unknown>
  /** @default "1 hour" */
  readonly retention?: Duration.Input | undefined
}): Layer.Layer<
  never,
  Validate.InvalidOptionsError,
  Sharding.Sharding | MessageStorage.MessageStorage | Blocking.BlockingExecutor
> => {
  const byName = new Map<string, Blocking.AnyTask>()
  for (const task of options.tasks) {
    // Entries that are not tasks are skipped, so that a tasks module's exports can be passed as
    // they are (`Object.values(Tasks)`, its error classes and all). A task without a module URL
    // can never be matched to a call: its calls would fail later, on a runner, as TaskNotFoundError.
    if (!Blocking.isTask(task)) continue
    if (task.module === undefined) {
      return Layer.effectDiscard(
        Effect.fail(
          new Validate.InvalidOptionsError({
            option: "tasks",
            reason: `must be tasks defined with a module URL, got "${task.name}" without one`
          })
        )
      )
    }
    byName.set(task.name, task)
  }
  const handlers = TaskEntity.toLayer(
    Effect.gen(function* () {
      const executor = yield* Blocking.BlockingExecutor
      return TaskEntity.of({
        RunTask: ({ payload: call, headers }) => {
          const task = byName.get(call.task)
          if (task === undefined || task.module === undefined || fileName(task.module) !== fileName(call.module)) {
            return Effect.fail(
              new Blocking.TaskNotFoundError({
                task: call.task,
                module: call.module,
                reason: `no runner task named "${call.task}" from ${fileName(call.module)} is registered on this runner`
              })
            )
          }
          return Effect.useSpan(`ClusterBlocking ${call.task}`, (span) =>
            executor.execute({
              task,
              payload: call.payload,
              transfer: [],
              timeoutMillis: call.timeoutMillis ?? undefined,
              queueTimeoutMillis: millisOf(headers[queueTimeoutHeader]),
              span
            })
          ).pipe(Effect.flatMap((reply) => storable(call.task, reply)))
        }
      })
    }),
    // The executor bounds and queues; the entity only spreads calls over runners.
    { concurrency: "unbounded" }
  )
  // A retention that is not a duration died while the layer was built; a negative one deleted
  // calls' replies as soon as they were stored. An infinite one keeps them, as ClusterRunner's does.
  const retention = options.retention ?? "1 hour"
  const decoded = Duration.fromInput(retention)
  const nan = typeof retention === "number" && Number.isNaN(retention)
  if (nan || decoded._tag === "None" || !(Duration.toMillis(decoded.value) >= 0)) {
    return Layer.effectDiscard(
      Effect.fail(
        new Validate.InvalidOptionsError({
          option: "retention",
          reason: `must be a duration >= 0, got ${Duration.isDuration(retention) ? Duration.format(retention) : String(retention)}`
        })
      )
    )
  }
  return Layer.merge(
    handlers,
    MessageRetention.make({ entity: TaskEntity, retention: decoded.value, interval: "1 minute" })
  )
}

const fileName = (url: string): string => url.slice(url.lastIndexOf("/") + 1)

// The call's queueTimeout travels as a header: RunTask's payload (internal/model.ts) has no field
// for it, and a header leaves calls from clients that do not send it as they were.
const queueTimeoutHeader = "volley-queue-timeout-millis"

const millisOf = (header: string | undefined): number | undefined => {
  const millis = header === undefined ? Number.NaN : Number(header)
  return Number.isFinite(millis) && millis > 0 ? millis : undefined
}

// The reply is stored as JSON (RunTask's success is `Schema.Unknown`): a value JSON would change
// must fail here, typed, not reach the client as a reply it cannot decode (a defect there). It is
// sent as JSON gives it back: Effect's cluster refuses an `undefined` anywhere in it, and the
// reply to a thrown non-Error (`throw { code: 1 }`) has `stack: undefined`, so such a task's
// failure reached the client as a MalformedMessage defect instead of a HandlerError.
const storable = (task: string, reply: Blocking.Reply): Effect.Effect<Blocking.Reply, Blocking.InvalidResultError> => {
  const found =
    reply._tag === "Success"
      ? notJson(reply.value, "result")
      : reply._tag === "Failure"
        ? notJson(reply.error, "failure")
        : undefined
  if (found !== undefined) {
    return Effect.fail(
      new Blocking.InvalidResultError({
        task,
        reason: `${found} cannot be stored as JSON; use a Schema whose encoded form is JSON (e.g. base64 for bytes)`
      })
    )
  }
  const stored = asJson(reply)
  return stored.bytes > maxStoredBytes
    ? Effect.fail(new Blocking.InvalidResultError({ task, reason: tooLargeReason("the reply", stored.bytes) }))
    : Effect.succeed(JSON.parse(stored.text) as Blocking.Reply)
}
