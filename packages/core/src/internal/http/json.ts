// A read that decodes a JSON body with a Schema: what `Http.getJson` / `Http.postJson` run and
// what `Fanout.json` hands a batch. A body that is not JSON, or JSON that does not match, is an
// `HttpClientError` with reason `DecodeError` naming the request (method and URL) and the issue,
// its `SchemaError` (or the parser's `SyntaxError`) kept as the `cause`, so a batch types it per item.
import * as Effect from "effect/Effect"
import * as HttpClientError from "effect/http/HttpClientError"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Schema from "effect/Schema"
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
  // What `HttpClientResponse.schemaBodyJson` runs, in fewer steps: the text, parsed here (an
  // error then needs no catch around the whole read, only around the decode). A small body's
  // read cost a fifth more through `response.json` and a catch of every failure.
  const decode = Schema.decodeEffect(Schema.toCodecJson(schema))
  const read: Read<S["Type"], HttpClientError.HttpClientError, S["DecodingServices"]> = (response) =>
    Effect.flatMap(response.text, (text) => {
      let json: Schema.Json
      try {
        json = text === "" ? null : JSON.parse(text)
      } catch (cause) {
        return Effect.fail(decodeError(response, cause, `body is not JSON: ${(cause as Error).message}`))
      }
      return Effect.mapError(decode(json), (error) =>
        decodeError(response, error, `body does not match the schema: ${error.message}`)
      )
    })
  consuming.add(read)
  reads.set(schema, read)
  return read
}

const reads = new WeakMap<Schema.Constraint, Read<unknown, HttpClientError.HttpClientError, unknown>>()

const decodeError = (response: HttpClientResponse.HttpClientResponse, cause: unknown, description: string) =>
  new HttpClientError.HttpClientError({
    reason: new HttpClientError.DecodeError({ request: response.request, response, cause, description })
  })

/**
 * Reads that always read the whole body or fail reading it (so a batch need not release the
 * body after their failure): JSON reads read it all before decoding.
 */
export const consuming: WeakSet<Read<unknown, unknown, unknown>> = new WeakSet()
