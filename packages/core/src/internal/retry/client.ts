// `Retry.withPolicy` marks the client it returns with the client it wraps, so `Http.*` and
// batches, which apply the policy themselves (body read included), run on the inner client
// instead of retrying twice: one rule for every volley request, however the layers are stacked.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientRequest from "effect/http/HttpClientRequest"

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

/** Called by `Retry.withPolicy`: from now on, requests must mark the fiber (see {@link applied}). */
export const wrapperBuilt = (): void => {
  wrappers.built = true
}

/**
 * `execute` with {@link PolicyApplied} set, and no {@link HopStrip} of a hop it is made during (a
 * token a transform fetches while a cross-origin hop is prepared keeps its own credentials). Only a `Retry.withPolicy` wrapper reads it, so until
 * one exists no request can meet one, and the context it costs per request is skipped.
 */
export const applied = <A, E, R>(execute: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  wrappers.built
    ? Effect.provideService(Effect.provideService(execute, PolicyApplied, true), HopStrip, undefined)
    : execute
