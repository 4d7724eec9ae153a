// TLS failures the same request would meet again: the origin's certificate is not trusted, has
// expired or names another host, or the two ends share no protocol version. Read by error code,
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

export const isTlsRefusal = (cause: unknown): boolean => {
  if (typeof cause !== "object" || cause === null) return false
  const code = (cause as { readonly code?: unknown }).code
  return typeof code === "string" && (CERTIFICATE_CODES.has(code) || PROTOCOL_CODES.has(code))
}
