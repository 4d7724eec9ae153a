import { X509Certificate } from "node:crypto"
import * as Tls from "node:tls"
import * as Validate from "@volley/core/Options"
import * as Effect from "effect/Effect"

/** TLS options for connections to origins (and, in the proxy layer, to an `https://` proxy). */
export type TlsOptions = Pick<
  Tls.ConnectionOptions,
  "ca" | "cert" | "key" | "servername" | "minVersion" | "rejectUnauthorized"
>

const VERSIONS: ReadonlyArray<Tls.SecureVersion> = ["TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1"]

const invalid = (option: string, reason: string) => new Validate.InvalidOptionsError({ option, reason })

/**
 * Checks what the type system cannot (values from JavaScript, PEM that does not parse, a key that
 * does not match its certificate), so a mistake fails at build time instead of on every request,
 * and keeps only the named fields: anything else (`timeout`, `lookup`, ...) would reach undici's
 * connector and override the layer's own settings.
 */
export const validate = Effect.fnUntraced(function* (option: string, tls: TlsOptions | undefined) {
  // `null` (from JavaScript or JSON) means unset, as `undefined` does: Node's defaults apply.
  if (tls === undefined || tls === null) return undefined
  if (typeof tls !== "object" || Array.isArray(tls)) {
    return yield* invalid(
      option,
      `must be an object of TLS options (ca, cert, key, servername, minVersion, rejectUnauthorized), got ${Array.isArray(tls) ? "an array" : typeof tls}`
    )
  }
  yield* Validate.optional(tls.minVersion, (version) => Validate.oneOf(`${option}.minVersion`, version, VERSIONS))
  yield* Validate.optional(tls.rejectUnauthorized, (reject) =>
    Validate.oneOf(`${option}.rejectUnauthorized`, reject, [true, false])
  )
  if (tls.servername !== undefined && (typeof tls.servername !== "string" || tls.servername === "")) {
    return yield* invalid(`${option}.servername`, "must be a host name")
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    return yield* invalid(option, "cert and key go together: a client certificate needs its private key")
  }
  const picked: TlsOptions = {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername }),
    ...(tls.minVersion === undefined ? {} : { minVersion: tls.minVersion }),
    ...(tls.rejectUnauthorized === undefined ? {} : { rejectUnauthorized: tls.rejectUnauthorized })
  }
  // Node skips a `ca` that is not PEM (a file path, a common mistake) without a word.
  for (const ca of picked.ca === undefined ? [] : Array.isArray(picked.ca) ? picked.ca : [picked.ca]) {
    yield* Effect.try({
      try: () => new X509Certificate(ca),
      catch: () => invalid(`${option}.ca`, "must be PEM certificates (their text, not a file path)")
    })
  }
  // OpenSSL's messages name the problem ("key values mismatch"), never the key material.
  yield* Effect.try({
    try: () => Tls.createSecureContext({ ca: picked.ca, cert: picked.cert, key: picked.key }),
    catch: (error) =>
      invalid(option, `ca, cert or key cannot be used: ${error instanceof Error ? error.message : String(error)}`)
  })
  return picked
})
