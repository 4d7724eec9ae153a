// Failures of requests that never left the client: they cannot be sent at all (a URL the client
// does not speak, `ftp:`, `data:`...; a header name or value it cannot write), or the client's
// own circuit breaker or rate limiter refused them. The retry policy never retries them, and the
// retry budget does not count them as requests: they would fund other requests' retries.
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"

/**
 * Codes of errors that reject a request's input before anything is sent: undici's
 * `InvalidArgumentError`, its refusal of an `Expect` header (`NotSupportedError`) and of a
 * Content-Length the body contradicts, and Node's own URL and header checks (`node:http`, `fetch`).
 */
const invalidInputCodes: ReadonlySet<string> = new Set([
  "UND_ERR_INVALID_ARG",
  "UND_ERR_NOT_SUPPORTED",
  "UND_ERR_REQ_CONTENT_LENGTH_MISMATCH",
  "ERR_INVALID_URL",
  "ERR_INVALID_URL_SCHEME",
  "ERR_INVALID_PROTOCOL",
  "ERR_INVALID_HTTP_TOKEN",
  "ERR_INVALID_CHAR",
  "ERR_HTTP_INVALID_HEADER_VALUE",
  "ERR_UNESCAPED_CHARACTERS"
])

/** Whether a client's transport error only wraps a rejection of the request's input. */
export const isInvalidInput = (cause: unknown): boolean =>
  typeof cause === "object" &&
  cause !== null &&
  typeof (cause as { code?: unknown }).code === "string" &&
  invalidInputCodes.has((cause as { code: string }).code)

/**
 * Whether a request's URL has a scheme no HTTP client sends (`ftp:`, `file:`...): a client
 * that does not type that as an `InvalidUrlError` fails it as a transport error, which would
 * fail the same way again (Effect's `FetchHttpClient`: fetch's `unknown scheme` network error,
 * which has no code). A URL that does not parse, relative say, is not judged here.
 */
export const isUnsendableScheme = (request: HttpClientRequest.HttpClientRequest): boolean => {
  const protocol = URL.parse(request.url)?.protocol
  return protocol !== undefined && protocol !== "http:" && protocol !== "https:"
}

/**
 * Whether a client's transport error only wraps a refusal of its own circuit breaker or rate
 * limiter (see Resilience). Read by tag, so Retry needs no Resilience import.
 */
export const isRefusal = (cause: unknown): boolean =>
  typeof cause === "object" &&
  cause !== null &&
  ((cause as { _tag?: unknown })._tag === "CircuitBreakerError" ||
    (cause as { _tag?: unknown })._tag === "RateLimiterError")

/**
 * Whether `error` says the request was never sent: it never can be, or the client's own circuit
 * breaker or rate limiter refused it (an open circuit refuses thousands at once, each of which
 * would have funded a fifth of a retry elsewhere).
 */
export const isUnsent = (error: unknown): boolean => {
  if (!HttpClientError.isHttpClientError(error)) return false
  const reason = error.reason
  return (
    reason._tag === "InvalidUrlError" ||
    reason._tag === "EncodeError" ||
    (reason._tag === "TransportError" &&
      (isInvalidInput(reason.cause) || isRefusal(reason.cause) || isUnsendableScheme(reason.request)))
  )
}
