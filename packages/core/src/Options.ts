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
