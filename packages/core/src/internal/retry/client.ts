// `Retry.withPolicy` marks the client it returns with the client it wraps, so `Http.*` and
// batches, which apply the policy themselves (body read included), run on the inner client
// instead of retrying twice: one rule for every volley request, however the layers are stacked.
import * as Context from "effect/Context"
import type * as HttpClient from "effect/http/HttpClient"

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
