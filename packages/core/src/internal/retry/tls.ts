// TLS failures the same request would meet again: the certificate of the origin (or of an
// `https://` proxy) is not trusted, has expired or names another host, the two ends share no
// protocol version, or the server refused the handshake (the client's certificate, say). Read by error code,
// so core needs no Node import. A connection closed during the handshake stays retryable.
const CERTIFICATE_CODES = new Set([
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_REJECTED",
  "CERT_REVOKED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "HOSTNAME_MISMATCH",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE"
])

const PROTOCOL_CODES = new Set([
  "ERR_SSL_NO_PROTOCOLS_AVAILABLE",
  "ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION",
  "ERR_SSL_UNSUPPORTED_PROTOCOL",
  "ERR_SSL_WRONG_VERSION_NUMBER"
])

// The server's alert refusing the handshake: no client certificate where it requires one (TLS 1.2
// answers that with handshake_failure, TLS 1.3 with certificate_required), one it does not trust
// or accept, nothing in common to agree on (no_application_protocol: no HTTP version both speak,
// an origin that speaks only HTTP/2 and a client without `http2`). OpenSSL 3 names the alerts of
// SSL 3 `SSL/TLS_`, older releases `SSLV3_`.
const ALERT_CODES = new Set(
  [
    "SSL/TLS_ALERT_HANDSHAKE_FAILURE",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "SSL/TLS_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSL/TLS_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSL/TLS_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSL/TLS_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSL/TLS_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED"
  ].map((alert) => `ERR_SSL_${alert}`)
)

// How deep to look through errors that wrap one: the proxy error for an `https://` proxy's
// certificate (the node client's ProxyConnectionError), and undici's own wrapper inside it.
const MAX_WRAPS = 3

/** Whether `cause`, or an error it wraps (its `cause`), is such a failure. */
export const isTlsRefusal = (cause: unknown): boolean => {
  let error = cause
  for (let depth = 0; depth <= MAX_WRAPS && typeof error === "object" && error !== null; depth++) {
    const code = (error as { readonly code?: unknown }).code
    if (typeof code === "string" && (CERTIFICATE_CODES.has(code) || PROTOCOL_CODES.has(code) || ALERT_CODES.has(code)))
      return true
    error = (error as { readonly cause?: unknown }).cause
  }
  return false
}
