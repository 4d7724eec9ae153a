/**
 * @since 0.1.0
 */

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
