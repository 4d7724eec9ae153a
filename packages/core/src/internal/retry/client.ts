// `Retry.withPolicy` marks the client it returns with the client it wraps, so `Http.*` and
// batches, which apply the policy themselves (body read included), run on the inner client
// instead of retrying twice: one rule for every volley request, however the layers are stacked.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"

/** Where a client wrapped by `Retry.withPolicy` keeps the client it wraps. */
export const WrappedKey: unique symbol = Symbol.for("@volley/core/Retry/withPolicy")

/** The client under `Retry.withPolicy`'s wrapper, or `client` itself. */
export const unwrap = <E, R>(client: HttpClient.HttpClient.With<E, R>): HttpClient.HttpClient.With<E, R> =>
  (client as { readonly [WrappedKey]?: HttpClient.HttpClient.With<E, R> })[WrappedKey] ?? client

/**
 * The request being sent under a policy its caller applies (`Http.*`, a batch, a wrapper's own
 * attempt): a `Retry.withPolicy` wrapper found deeper, under transforms or `Resilience.layer`,
 * passes that request through instead of retrying it again. The request itself, not a flag: a
 * request made while it is sent (a session a `HttpClient.transform` fetches through another
 * wrapped client) is not it, and gets its own client's policy.
 */
export const PolicyApplied = Context.Reference<HttpClientRequest.HttpClientRequest | undefined>(
  "@volley/core/Retry/PolicyApplied",
  { defaultValue: () => undefined }
)

const WrappersKey: unique symbol = Symbol.for("@volley/core/Retry/wrappers")
// Whether a `Retry.withPolicy` wrapper was ever built in this process. Shared through the global
// symbol registry, as the keys above are, so that two copies of this package (a wrapper built
// by one, requests sent by the other) still see each other's wrappers.
const registry = globalThis as { [WrappersKey]?: { built: boolean } }
const wrappers = registry[WrappersKey] ?? { built: false }
registry[WrappersKey] = wrappers

/** Called by `Retry.withPolicy`: from now on, requests must mark the fiber (see {@link executeApplied}). */
export const wrapperBuilt = (): void => {
  wrappers.built = true
}

/**
 * `client.execute(request)` with the prepared request marked as sent under the caller's policy
 * (see {@link PolicyApplied}); its preparation (the client's transforms, which may make requests
 * of their own: a token fetched through another client) runs unmarked, as any new request does.
 * Only a `Retry.withPolicy` wrapper reads the mark, so until one exists no request can meet one,
 * and the plain `execute` is sent.
 */
export const executeApplied = <E, R>(
  client: HttpClient.HttpClient.With<E, R>,
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, E, R> =>
  wrappers.built
    ? Effect.flatMap(Effect.provideService(client.preprocess(request), PolicyApplied, undefined), (prepared) =>
        Effect.provideService(client.postprocess(Effect.succeed(prepared)), PolicyApplied, prepared)
      )
    : client.execute(request)
