// The arguments of `Http.*` as JavaScript (or a cast) may pass them, checked before a request is built.
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import { InvalidOptionsError } from "../options.ts"
import { redactUrl } from "../url.ts"

// A call a JavaScript caller (or a cast) got wrong fails as a request that can never be sent,
// never retried: a URL that is not a string or URL with InvalidUrlError, options, headers or
// urlParams that are not objects with EncodeError (as a header the client cannot write does),
// each caused by the InvalidOptionsError naming it. They threw out of the call (`null` for the
// URL, `"x"` for the headers) or were dropped without a word (`"x"` for the options). Checked
// before anything is built (`empty`: the request of the call's method); nothing to check on the
// common path (a URL string, no options).
export const refused = (
  url: string | URL,
  options: { readonly headers?: unknown; readonly urlParams?: unknown } | undefined,
  empty: HttpClientRequest.HttpClientRequest
): Effect.Effect<never, HttpClientError.HttpClientError> | undefined => {
  const urlOk = typeof url === "string" || url instanceof URL
  if (urlOk && options == null) return undefined
  const bad = !urlOk
    ? ["url", "must be a string or a URL", url]
    : !isObject(options)
      ? ["options", "must be an object", options]
      : options.headers != null && !isObject(options.headers)
        ? ["headers", "must be an object of header names to values", options.headers]
        : options.urlParams != null && !isObject(options.urlParams)
          ? ["urlParams", "must be an object of parameter names to values", options.urlParams]
          : undefined
  if (bad === undefined) return undefined
  const [option, must, value] = bad
  const cause = new InvalidOptionsError({ option: option as string, reason: `${must}, got ${kindOf(value)}` })
  // Never sent, so its URL is the one the error shows: Effect's message misses a password that
  // holds a `/` in a URL that does not parse.
  const request = HttpClientRequest.setUrl(empty, typeof url === "string" ? redactUrl(url) : urlOk ? url : "")
  const props = { request, cause, description: cause.message }
  return Effect.fail(
    new HttpClientError.HttpClientError({
      reason: urlOk ? new HttpClientError.EncodeError(props) : new HttpClientError.InvalidUrlError(props)
    })
  )
}

const isObject = (value: unknown): value is object =>
  typeof value === "object" && value !== null && !Array.isArray(value)

// A string by its kind alone: where headers or query parameters go, it is likely one of their
// values (`{ headers: "Bearer <token>" }`), which the error must not echo.
const kindOf = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "an array" : typeof value === "string" ? "a string" : typeof value
