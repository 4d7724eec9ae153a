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
 * Set while `Http.*` or a batch runs a request under the policy themselves: a `Retry.withPolicy`
 * wrapper found deeper (under `HttpClient.mapRequest`, `Resilience.layer`...) passes it through,
 * so nothing is retried twice whatever sits above the wrapper.
 */
export const PolicyApplied = Context.Reference<boolean>("@volley/core/Retry/PolicyApplied", {
  defaultValue: () => false
})

/**
 * Set while a redirect hop that crossed origins is sent: drops the headers that must not reach
 * its origin. A `Retry.withPolicy` wrapper passing the hop's request through applies it after
 * the transforms of the client it wraps, which run after everything above the wrapper (the
 * hop's own stripping included) and could put an `Authorization` back.
 */
export const HopStrip = Context.Reference<
  ((request: HttpClientRequest.HttpClientRequest) => HttpClientRequest.HttpClientRequest) | undefined
>("@volley/core/Retry/HopStrip", { defaultValue: () => undefined })

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

/** `effect` run as a new request's preparation: under no request's policy mark and no hop's strip. */
export const unmarked = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.provideService(Effect.provideService(effect, PolicyApplied, false), HopStrip, undefined)

/**
 * `client.execute(request)` sent with {@link PolicyApplied} set and `strip` (a hop's
 * {@link HopStrip}, or none), while the request's preparation (the client's transforms, which may
 * make requests of their own: a token fetched through another client) runs with neither, as any
 * new request does: its wrapper applies its own policy and strips nothing. Only a
 * `Retry.withPolicy` wrapper reads them, so until one exists no request can meet one, and the
 * plain `execute` is sent.
 */
export const executeApplied = <E, R>(
  client: HttpClient.HttpClient.With<E, R>,
  request: HttpClientRequest.HttpClientRequest,
  strip?: (request: HttpClientRequest.HttpClientRequest) => HttpClientRequest.HttpClientRequest
): Effect.Effect<HttpClientResponse.HttpClientResponse, E, R> => {
  if (!wrappers.built) return client.execute(request)
  const prepared = unmarked(client.preprocess(request))
  return Effect.provideService(
    Effect.provideService(client.postprocess(prepared), PolicyApplied, true),
    HopStrip,
    strip
  )
}
