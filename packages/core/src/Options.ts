/**
 * Validation of the options that volley's layers and combinators accept.
 *
 * Every public constructor validates its options at the boundary and fails with
 * an {@link InvalidOptionsError} that names the option and the rejected value,
 * so a typo in a config file surfaces when the layer is built, not as a hang
 * or a crash later.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import { InvalidOptionsError } from "./internal/options.ts"

export * from "./internal/options.ts"

/**
 * An optional `Config` entry: `undefined` when it is not set (so the layer's default applies),
 * a `ConfigError` when it is set but does not parse. Every `layerConfig` reads its options so.
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { Options } from "@volley/core"
 *
 * const retries = Options.optionalConfig(Config.Int("RETRIES")) // Config<number | undefined>
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const optionalConfig = <A>(config: Config.Config<A>): Config.Config<A | undefined> =>
  Config.withDefault(config, undefined)

/**
 * Names the `Config` key an option was read from in the `InvalidOptionsError` a `layerConfig`
 * fails with, so that the message points at the variable to fix: `VOLLEY_RETRY_RETRIES=-2`
 * fails with `Invalid option retries: must be an integer >= 0, got -2 (VOLLEY_RETRY_RETRIES)`.
 * `keys` maps options to their keys under `prefix`, joined with `_` as environment variables are.
 *
 * @example
 * ```ts
 * import { Options } from "@volley/core"
 *
 * const retries = Options.positiveInt("retries", -2, 0).pipe(Options.configKeys("VOLLEY_RETRY", { retries: "RETRIES" }))
 * // fails: Invalid option retries: must be an integer >= 0, got -2 (VOLLEY_RETRY_RETRIES)
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const configKeys =
  (prefix: string, keys: Readonly<Record<string, string>>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.mapError(effect, (error) =>
      error instanceof InvalidOptionsError && Object.hasOwn(keys, error.option)
        ? (new InvalidOptionsError({
            option: error.option,
            reason: `${error.reason} (${prefix}_${keys[error.option]})`
          }) as E)
        : error
    )
