// A read that decodes a JSON body with a Schema: what `Http.getJson` / `Http.postJson` run and
// what `Fanout.json` hands a batch. A body that is not JSON, or JSON that does not match, is an
// `HttpClientError` with reason `DecodeError` naming the request (method and URL) and the
// schema's issue, its `SchemaError` kept as the `cause`, so a batch types it per item.
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Schema from "effect/Schema"
import type { Read } from "./exchange.ts"

/** The decoder is built once per schema use, not per response. */
export const readJson = <S extends Schema.Constraint>(
  schema: S
): Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]> => {
  const decode = HttpClientResponse.schemaBodyJson(schema)
  const read: Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]> = (response) =>
    Effect.catchTag(decode(response), "SchemaError", (cause) =>
      Effect.fail(
        new HttpClientError.HttpClientError({
          reason: new HttpClientError.DecodeError({
            request: response.request,
            response,
            cause,
            description: `body does not match the schema: ${cause.message}`
          })
        })
      )
    )
  consuming.add(read)
  return read
}

/**
 * Reads that always read the whole body or fail reading it (so a batch need not release the
 * body after their failure): JSON reads read it all before decoding.
 */
export const consuming: WeakSet<Read<unknown, unknown, unknown>> = new WeakSet()
