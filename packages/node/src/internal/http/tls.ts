import { X509Certificate } from "node:crypto"
import { isIPv6 } from "node:net"
import * as Tls from "node:tls"
import * as Validate from "@volley/core/Options"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"

/** TLS options for connections to origins (and, in the proxy layer, to an `https://` proxy). */
export type TlsOptions = Pick<
  Tls.ConnectionOptions,
  "ca" | "cert" | "key" | "servername" | "minVersion" | "rejectUnauthorized"
> & {
  /** The passphrase of an encrypted `key`, as Node's `passphrase`. */
  readonly passphrase?: string | Redacted.Redacted<string> | undefined
}

/** Validated TLS options, as Node's TLS (and undici's connector) takes them. */
export type ResolvedTls = Pick<
  Tls.ConnectionOptions,
  "ca" | "cert" | "key" | "passphrase" | "servername" | "minVersion" | "rejectUnauthorized"
>

const VERSIONS: ReadonlyArray<Tls.SecureVersion> = ["TLSv1.3", "TLSv1.2", "TLSv1.1", "TLSv1"]

const invalid = (option: string, reason: string) => new Validate.InvalidOptionsError({ option, reason })

// No URL delimiters, brackets or whitespace, except in an IPv6 address (which is written without
// brackets here, as Node takes it).
const isHostName = (name: string | undefined): boolean =>
  name === undefined || isIPv6(name) || /^[^\s/\\:?#@[\]]+$/.test(name)

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
      `must be an object of TLS options (ca, cert, key, passphrase, servername, minVersion, rejectUnauthorized), got ${Array.isArray(tls) ? "an array" : typeof tls}`
    )
  }
  yield* Validate.optional(tls.minVersion, (version) => Validate.oneOf(`${option}.minVersion`, version, VERSIONS))
  yield* Validate.optional(tls.rejectUnauthorized, (reject) =>
    Validate.oneOf(`${option}.rejectUnauthorized`, reject, [true, false])
  )
  if (tls.servername !== undefined && (typeof tls.servername !== "string" || tls.servername === "")) {
    return yield* invalid(`${option}.servername`, "must be a host name")
  }
  // A servername with a port or scheme (`localhost:443`, as a URL's host is written) was sent as
  // SNI and matched against the certificate as it is, so every request failed on its name.
  if (!isHostName(tls.servername)) {
    return yield* invalid(
      `${option}.servername`,
      `must be a host name, without a scheme, port or path, got ${JSON.stringify(tls.servername)}`
    )
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) {
    return yield* invalid(option, "cert and key go together: a client certificate needs its private key")
  }
  const passphrase = Redacted.isRedacted(tls.passphrase) ? Redacted.value(tls.passphrase) : tls.passphrase
  if (passphrase !== undefined && (typeof passphrase !== "string" || tls.key === undefined)) {
    return yield* invalid(`${option}.passphrase`, "must be a string (or Redacted), the passphrase of an encrypted key")
  }
  const picked: ResolvedTls = {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    ...(passphrase === undefined ? {} : { passphrase }),
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
    try: () =>
      Tls.createSecureContext({ ca: picked.ca, cert: picked.cert, key: picked.key, passphrase: picked.passphrase }),
    catch: (error) =>
      (error as { readonly code?: unknown }).code === "ERR_OSSL_BAD_DECRYPT"
        ? invalid(option, "key is encrypted, and its passphrase is missing or wrong")
        : invalid(option, `ca, cert or key cannot be used: ${error instanceof Error ? error.message : String(error)}`)
  })
  return picked
})
