/**
 * @since 0.1.0
 */
import "./internal/runtime.ts"

/**
 * A `Blocking.BlockingExecutor` on `node:worker_threads`: bounded queue, timeouts, hard
 * cancellation, crash recovery, metrics and spans.
 *
 * @since 0.1.0
 */
export * as NodeBlocking from "./NodeBlocking.ts"
/**
 * Effect's `HttpClient` on undici, with the connection pool and timeouts a production client needs.
 *
 * @since 0.1.0
 */
export * as NodeHttpClient from "./NodeHttpClient.ts"
/**
 * `HttpClient` layers through HTTP, HTTPS and SOCKS5 proxies, routed per origin from a
 * `Proxy.ProxyConfig` or the proxy environment variables.
 *
 * @since 0.1.0
 */
export * as NodeProxy from "./NodeProxy.ts"
