/**
 * @since 0.1.0
 */

/**
 * Blocking and CPU-heavy work as Effects: tasks with Schema-typed payloads and results, run by
 * a `BlockingExecutor` layer (inline here, worker threads in `@volley/node`).
 *
 * @since 0.1.0
 */
export * as Blocking from "./Blocking.ts"

/**
 * Everyday HTTP calls as Effects, on Effect's own `HttpClient`.
 *
 * @since 0.1.0
 */
export * as Http from "./Http.ts"

/**
 * Validation of the options that volley's layers and combinators accept.
 *
 * @since 0.1.0
 */
export * as Options from "./Options.ts"
