/**
 * Per-request and per-batch settings for response bodies: decompression and a size limit.
 *
 * A client layer sets the defaults (`NodeHttpClient.layer({ decompress, maxBodySize })`); the
 * references here override them for the effect they wrap: one `Http.*` call, a whole `Fanout`
 * batch (its fibers inherit them) or a pipeline. `undefined`, their default, means "the
 * client's setting".
 *
 * A body over its limit fails the read with an `HttpClientError` whose reason is a
 * `DecodeError` caused by a {@link BodyTooLargeError}; the client closes the connection at once
 * rather than read the rest. The limit counts bytes after decompression, so a compression
 * bomb fails after `maxBodySize` bytes, not after it has filled memory; `@volley/node`'s client
 * also fails an encoded body whose wire bytes pass twice the limit (and 64 KiB), so padding
 * that decodes to nothing is not read on and on.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as internal from "./internal/http/body.ts"
import { type InvalidOptionsError, oneOf } from "./internal/options.ts"

/**
 * Whether responses are decoded (`Content-Encoding` gzip, deflate, br, zstd) for the requests
 * of the effect it is provided to; `undefined` leaves it to the client (on by default with
 * `NodeHttpClient`). Off, no `Accept-Encoding` is sent and bodies arrive as the server sent
 * them. Prefer {@link withDecompress}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, HttpBody } from "@volley/core"
 *
 * const raw = Http.getBytes("http://127.0.0.1:8080/archive").pipe(Effect.provideService(HttpBody.Decompress, false))
 * ```
 *
 * @since 0.1.0
 * @category references
 */
export const Decompress = internal.Decompress

/**
 * The most bytes (after decompression) a response body may have for the requests of the effect
 * it is provided to; `undefined` leaves it to the client (no limit unless the layer sets
 * one). Prefer {@link withMaxBodySize}, which validates the value.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, HttpBody } from "@volley/core"
 *
 * const page = Http.getText("http://127.0.0.1:8080/").pipe(Effect.provideService(HttpBody.MaxBodySize, 1_000_000))
 * ```
 *
 * @since 0.1.0
 * @category references
 */
export const MaxBodySize = internal.MaxBodySize

/**
 * The cause of the `DecodeError` a body read fails with once the body grows past its
 * `maxBodySize`. Names the limit and the request (its URL redacted as Effect's errors redact
 * it). Test for it with {@link isBodyTooLarge}.
 *
 * @example
 * ```ts
 * import { HttpBody } from "@volley/core"
 *
 * const error = new HttpBody.BodyTooLargeError({ limit: 1024, method: "GET", url: "http://127.0.0.1:8080/big" })
 * error.message // "The response body of GET http://127.0.0.1:8080/big exceeds maxBodySize (1024 bytes)"
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export const BodyTooLargeError = internal.BodyTooLargeError

/**
 * The cause of the `DecodeError` a body read fails with once the body grows past its
 * `maxBodySize`.
 *
 * @since 0.1.0
 * @category errors
 */
export type BodyTooLargeError = internal.BodyTooLargeError

/**
 * Whether an error is a {@link BodyTooLargeError}, or an `HttpClientError` caused by one (as
 * body reads fail).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, HttpBody } from "@volley/core"
 *
 * const capped = Http.getText("http://127.0.0.1:8080/big").pipe(
 *   HttpBody.withMaxBodySize(1_000_000),
 *   Effect.catchIf(HttpBody.isBodyTooLarge, () => Effect.succeed("too large"))
 * )
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isBodyTooLarge: (error: unknown) => boolean = internal.isBodyTooLarge

/**
 * Turns decompression on or off for every request of `effect` (a call, a batch, a pipeline),
 * whatever the client layer says. A value that is not a boolean (`"false"` from JavaScript)
 * is a defect (an `InvalidOptionsError`) before anything runs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Fanout, HttpBody } from "@volley/core"
 *
 * const raw = Fanout.all(["http://127.0.0.1:8080/a.gz", "http://127.0.0.1:8080/b.gz"]).pipe(HttpBody.withDecompress(false))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withDecompress =
  (enabled: boolean) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    // Checked: from JavaScript or a config string, `"false"` was truthy and turned decoding on.
    // A defect, not a failure: the type says boolean, so TypeScript callers get no new error.
    enabled === true || enabled === false
      ? Effect.provideService(effect, internal.Decompress, enabled)
      : Effect.flatMap(Effect.orDie(oneOf("decompress", enabled, [true, false])), () => effect)

/**
 * Limits every response body read in `effect` (a call, a batch, a pipeline) to `bytes` after
 * decompression, whatever the client layer says; `Infinity` lifts the limit. A value that is
 * not an integer >= 1 (0, negative, `NaN`) fails with an `InvalidOptionsError` before anything
 * runs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Http, HttpBody } from "@volley/core"
 *
 * const small = Http.getText("http://127.0.0.1:8080/config").pipe(HttpBody.withMaxBodySize(64 * 1024))
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const withMaxBodySize =
  (bytes: number) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | InvalidOptionsError, R> =>
    Effect.flatMap(internal.validateMaxBodySize("maxBodySize", bytes), (limit) =>
      Effect.provideService(effect, internal.MaxBodySize, limit)
    )
