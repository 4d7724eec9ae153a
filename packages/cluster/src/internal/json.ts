// What a persisted message can carry: Effect's cluster stores payloads as JSON, so a value JSON
// would change (a Uint8Array becomes an object of indices, a Date a string, NaN null, a Map {})
// must be refused before it is stored, not found wrong on the runner.

/** The path of the first value in `value` that JSON would not give back as it is, or undefined. */
export const notJson = (value: unknown, path = "payload"): string | undefined => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return undefined
  if (typeof value === "number") return Number.isFinite(value) ? undefined : `${path} (${value})`
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = notJson(value[i], `${path}[${i}]`)
      if (found !== undefined) return found
    }
    return undefined
  }
  if (typeof value === "object") {
    const proto = Object.getPrototypeOf(value)
    if (proto !== Object.prototype && proto !== null) return `${path} (${proto?.constructor?.name ?? "object"})`
    for (const [key, field] of Object.entries(value)) {
      // JSON drops the key, which an optional field reads back the same.
      if (field === undefined) continue
      const found = notJson(field, `${path}.${key}`)
      if (found !== undefined) return found
    }
    return undefined
  }
  return `${path} (${typeof value})`
}
