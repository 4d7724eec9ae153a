// What a transport failure's cause says, for the error's message: "connect ECONNREFUSED 127.0.0.1:8080"
// rather than only "Transport error (GET …)". Best effort: a cause that cannot be read says nothing.
export const describeCause = (cause: unknown): string | undefined => {
  try {
    // Happy eyeballs reports one failure per address tried; the first names the problem.
    if (cause instanceof AggregateError && cause.errors.length > 0 && cause.message === "") {
      return describeCause(cause.errors[0])
    }
    if (cause instanceof Error) {
      const code = (cause as { readonly code?: unknown }).code
      return cause.message !== "" ? cause.message : typeof code === "string" ? code : cause.name
    }
    return typeof cause === "string" && cause !== "" ? cause : undefined
  } catch {
    return undefined
  }
}

/** `{ description }` for an error's fields, or nothing (exactOptionalPropertyTypes forbids an explicit undefined). */
export const describedBy = (cause: unknown): { readonly description?: string } => {
  const description = describeCause(cause)
  return description === undefined ? {} : { description }
}
