import type * as HttpClientRequest from "effect/http/HttpClientRequest"

/**
 * Whether a request's body can be sent again as it was. A `Stream` body, or a raw body that is
 * not text or bytes (a Node `Readable`, an async iterable), is used up by the first attempt: a
 * retry would send it empty, and the server would take an empty upload for a complete one.
 */
export const isReplayable = (request: HttpClientRequest.HttpClientRequest): boolean => {
  const body = request.body
  switch (body._tag) {
    case "Empty":
    case "Uint8Array":
    case "FormData":
      return true
    case "Raw": {
      const raw = body.body
      return (
        typeof raw === "string" ||
        raw instanceof Uint8Array ||
        raw instanceof ArrayBuffer ||
        raw instanceof URLSearchParams ||
        (typeof Blob !== "undefined" && raw instanceof Blob)
      )
    }
    default:
      return false
  }
}
