// undici refuses a request whose method or headers it cannot (or will not) write only once its
// Agent has made a pool for the origin, and that pool, never connected, is never dropped: a
// crawler sending a token with a trailing newline kept 29 KB per origin it met (2.9 GB for
// 100,000 origins), every request failing. The same rules (undici 8's `Request`), checked before
// dispatch, refuse such a request with undici's own error and message, and nothing is made.
// undici still checks everything itself: a rule missed here costs a pool, never a request.
import * as Undici from "@effect/platform-node/Undici"
import * as Headers from "effect/http/Headers"

// Headers objects found sendable: a batch's requests mostly share one (made from one template).
const sendable = new WeakSet<Headers.Headers>()

// undici's token rule (RFC 9110's, as core's own check of methods and header names): kept here, as
// node may use only core's public modules, and what this file must match is undici.
const TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/
// Outside field-vchar, SP and HTAB: CR, LF, NUL, other controls, DEL, above U+00FF.
const NOT_FIELD_VALUE = /[^\t\x20-\x7e\x80-\xff]/
const METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])

/** The error undici would refuse this request with (before sending anything), if any. */
export const refusal = (method: string, headers: Headers.Headers): Error | undefined => {
  if (!METHODS.has(method) && !TOKEN.test(method))
    return new Undici.errors.InvalidArgumentError("invalid request method")
  if (headers === Headers.empty || sendable.has(headers)) return undefined
  for (const name of Object.keys(headers)) {
    const refused = headerRefusal(name, headers[name]!)
    if (refused !== undefined) return refused
  }
  sendable.add(headers)
  return undefined
}

const headerRefusal = (name: string, value: string): Error | undefined => {
  if (!TOKEN.test(name)) return new Undici.errors.InvalidArgumentError("invalid header key")
  if (NOT_FIELD_VALUE.test(value)) return new Undici.errors.InvalidArgumentError(`invalid ${name} header`)
  switch (name.toLowerCase()) {
    case "content-length":
      return /^[0-9]+$/.test(value)
        ? undefined
        : new Undici.errors.InvalidArgumentError("invalid content-length header")
    case "transfer-encoding":
    case "keep-alive":
    case "upgrade":
      return new Undici.errors.InvalidArgumentError(`invalid ${name.toLowerCase()} header`)
    case "connection":
      return value
        .toLowerCase()
        .split(",")
        .every((token) => TOKEN.test(token.trim()))
        ? undefined
        : new Undici.errors.InvalidArgumentError("invalid connection header")
    case "expect":
      return new Undici.errors.NotSupportedError("expect header not supported")
    default:
      return undefined
  }
}
