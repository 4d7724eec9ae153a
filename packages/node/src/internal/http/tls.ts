import type * as Tls from "node:tls"
import * as Validate from "@volley/core/Options"
import * as Effect from "effect/Effect"

/** TLS options for connections to origins (and, in the proxy layer, to an `https://` proxy). */
export type TlsOptions = Pick<
  Tls.ConnectionOptions,
  "ca" | "cert" | "key" | "servername" | "minVersion" | "rejectUnauthorized"
>

const VERSIONS: ReadonlyArray<Tls.SecureVersion> = ["TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1"]

/** Checks what the type system cannot (values from JavaScript or config), so a typo fails at build time. */
export const validate = Effect.fnUntraced(function* (option: string, tls: TlsOptions | undefined) {
  if (tls === undefined) return undefined
  yield* Validate.optional(tls.minVersion, (version) => Validate.oneOf(`${option}.minVersion`, version, VERSIONS))
  yield* Validate.optional(tls.rejectUnauthorized, (reject) =>
    Validate.oneOf(`${option}.rejectUnauthorized`, reject, [true, false])
  )
  yield* Validate.optional(tls.servername, (name) =>
    typeof name === "string" && name !== ""
      ? Effect.succeed(name)
      : Effect.fail(new Validate.InvalidOptionsError({ option: `${option}.servername`, reason: "must be a host name" }))
  )
  return tls
})
