/**
 * @since 0.1.0
 */

/**
 * Effect's `HttpClient` on undici, with the connection pool and timeouts a production client needs.
 *
 * @since 0.1.0
 */
export * as NodeHttpClient from "./NodeHttpClient.ts"
