// Per-call body settings (decompression, size limit) as references a client reads, and the
// error a body over its limit fails with. Shared by `HttpBody` (the public module), the error-
// body drain in exchange.ts and the platform clients that honour them.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Schema from "effect/Schema"
import { type InvalidOptionsError, positiveInt } from "../options.ts"
import { redactUrl } from "../url.ts"

/** `undefined`: the client's own setting (a layer option) applies. */
export const Decompress = Context.Reference<boolean | undefined>("@volley/core/HttpBody/Decompress", {
  defaultValue: () => undefined
})

/** `undefined`: the client's own setting (a layer option) applies. */
export const MaxBodySize = Context.Reference<number | undefined>("@volley/core/HttpBody/MaxBodySize", {
  defaultValue: () => undefined
})

export class BodyTooLargeError extends Schema.TaggedError<BodyTooLargeError>()("BodyTooLargeError", {
  limit: Schema.Number,
  method: Schema.String,
  url: Schema.String
}) {
  override get message(): string {
    return `The response body of ${this.method} ${this.url} exceeds maxBodySize (${this.limit} bytes)`
  }
}

/** `bytes` as a body limit: an integer >= 1, or `Infinity` for none. */
export const validateMaxBodySize = (option: string, bytes: number): Effect.Effect<number, InvalidOptionsError> =>
  bytes === Number.POSITIVE_INFINITY ? Effect.succeed(bytes) : positiveInt(option, bytes)

/**
 * The `HttpClientError` a client fails a body read with once more than `limit` bytes (after
 * decompression) arrived: a `DecodeError` whose cause is a {@link BodyTooLargeError}. The URL
 * is redacted as Effect redacts it in its own errors.
 */
export const bodyTooLarge = (
  request: HttpClientRequest.HttpClientRequest,
  response: HttpClientResponse.HttpClientResponse,
  limit: number
): HttpClientError.HttpClientError => {
  const cause = new BodyTooLargeError({ limit, method: request.method, url: redactUrl(request.url) })
  return new HttpClientError.HttpClientError({
    reason: new HttpClientError.DecodeError({ request, response, cause, description: cause.message })
  })
}

/** Whether `error` is (or is an `HttpClientError` caused by) a {@link BodyTooLargeError}. */
export const isBodyTooLarge = (error: unknown): boolean => {
  if (error instanceof BodyTooLargeError) return true
  if (!HttpClientError.isHttpClientError(error)) return false
  const reason = error.reason
  return reason._tag === "DecodeError" && reason.cause instanceof BodyTooLargeError
}
