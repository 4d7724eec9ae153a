import type * as Effect from "effect/Effect"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import type * as Schema from "effect/Schema"

/** How a runner reads a response body into a value it can store; registered on runners by name. */
export interface Reader<A = unknown> {
  readonly name: string
  readonly success: Schema.Codec<A, unknown>
  readonly read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, unknown>
}
