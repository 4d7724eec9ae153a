// A read that decodes a JSON body with a Schema: what `Http.getJson` / `Http.postJson` run and
// what `Fanout.json` hands a batch. A body that is not JSON, or JSON that does not match, is an
// `HttpClientError` with reason `DecodeError` naming the request (method and URL) and the issue,
// its `SchemaError` (or the parser's `SyntaxError`) kept as the `cause`, so a batch types it per item.
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Schema from "effect/Schema"
import type { Read } from "./exchange.ts"

/**
 * The read of a schema, built once per schema, not per response nor per `Http.getJson` call
 * (building its decoder walks the schema: µs a call, more than a small body's decoding).
 */
export const readJson = <S extends Schema.Constraint>(
  schema: S
): Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]> => {
  const known = reads.get(schema)
  if (known !== undefined) return known as Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]>
  const decode = HttpClientResponse.schemaBodyJson(schema)
  const read: Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]> = (response) =>
    Effect.catch(decode(response), (error) => Effect.fail(described(response, error)))
  consuming.add(read)
  reads.set(schema, read)
  return read
}

const reads = new WeakMap<Schema.Constraint, Read<unknown, HttpClientError.HttpClientError, unknown>>()

// The failure with what went wrong in its message: JSON that does not match (the SchemaError its
// cause), or a body that is not JSON at all (Effect's own DecodeError says only "Decode error";
// the SyntaxError stays its cause).
const described = (
  response: HttpClientResponse.HttpClientResponse,
  error: Schema.SchemaError | HttpClientError.HttpClientError
): HttpClientError.HttpClientError => {
  if (error._tag === "SchemaError") {
    return decodeError(response, error, `body does not match the schema: ${error.message}`)
  }
  const reason = error.reason
  return reason._tag === "DecodeError" && reason.description === undefined && reason.cause instanceof SyntaxError
    ? decodeError(response, reason.cause, `body is not JSON: ${reason.cause.message}`)
    : error
}

const decodeError = (response: HttpClientResponse.HttpClientResponse, cause: unknown, description: string) =>
  new HttpClientError.HttpClientError({
    reason: new HttpClientError.DecodeError({ request: response.request, response, cause, description })
  })

/**
 * Reads that always read the whole body or fail reading it (so a batch need not release the
 * body after their failure): JSON reads read it all before decoding.
 */
export const consuming: WeakSet<Read<unknown, unknown, unknown>> = new WeakSet()
