// The retry policy's own errors. Declared here, re-exported by Retry.ts: the retry loop and the
// fan-out engine fail with them without importing the public module.
import type * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import type * as HttpClientError from "effect/http/HttpClientError"
import { redactUrl } from "../url.ts"

/**
 * A request did not finish before its deadline (the batch deadline or the policy's total
 * `timeout`). `url` is kept with the query parameters named in `UrlParams.CurrentRedactedNames`
 * redacted (those of the fiber that builds the error; Effect's defaults outside one).
 *
 * @example
 * ```ts
 * import { Retry } from "@volley/core"
 *
 * const error = new Retry.DeadlineExceeded({ method: "GET", url: "http://127.0.0.1:8080/slow" })
 * error.message // "GET http://127.0.0.1:8080/slow did not finish before its deadline"
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadlineExceeded extends Data.TaggedError("DeadlineExceeded")<{
  readonly method: string
  readonly url: string
}> {
  constructor(props: { readonly method: string; readonly url: string }) {
    super({ ...props, url: redactUrl(props.url) })
  }
  override get message(): string {
    return `${this.method} ${this.url} did not finish before its deadline`
  }
}

/**
 * The server asked to retry later (`Retry-After`) than the policy's cap or than the time left
 * before the deadline, so the request failed at once instead of sleeping. `cause` is the
 * `HttpClientError` of the response that carried the header.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout } from "@volley/core"
 *
 * const program = Fanout.all(["http://127.0.0.1:8080/busy"], { deadline: "10 seconds" }).pipe(
 *   Effect.catchTag("RetryAfterTooLong", (e) => Effect.succeed(`come back in ${e.retryAfterMillis} ms`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RetryAfterTooLong extends Data.TaggedError("RetryAfterTooLong")<RetryAfterTooLongProps> {
  constructor(props: RetryAfterTooLongProps) {
    super({ ...props, url: redactUrl(props.url) })
  }
  override get message(): string {
    const what = this.limit === "cap" ? "the maxRetryAfter cap of" : "the time left before the deadline,"
    return `${this.method} ${this.url} was asked to retry after ${this.retryAfterMillis} ms, more than ${what} ${this.limitMillis} ms`
  }
}

interface RetryAfterTooLongProps {
  readonly method: string
  /** Redacted as {@link DeadlineExceeded}'s. */
  readonly url: string
  readonly retryAfterMillis: number
  readonly limitMillis: number
  /** `"cap"`: longer than `maxRetryAfter`; `"deadline"`: longer than the time left. */
  readonly limit: "cap" | "deadline"
  readonly cause: HttpClientError.HttpClientError
}

/**
 * Failures the policy itself adds to a request's own errors.
 *
 * @since 0.1.0
 * @category errors
 */
export type RetryError = DeadlineExceeded | RetryAfterTooLong | Cause.TimeoutError
