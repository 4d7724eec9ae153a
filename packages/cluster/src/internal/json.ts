// What a persisted message can carry: Effect's cluster stores payloads as JSON, so a value JSON
// would change (a Uint8Array becomes an object of indices, a Date a string, NaN null, a Map {})
// must be refused before it is stored, not found wrong on the runner.

/** The path of the first value in `value` that JSON would not give back as it is, or undefined. */
export const notJson = (value: unknown, path = "payload"): string | undefined => check(value, path, new WeakSet())

// `open` holds the objects on the path from the root to `value`: one met again there is a cycle,
// which JSON cannot store (and which would recurse until the stack overflows). An object reached
// twice by different paths is no cycle: JSON stores it twice and gives back equal copies.
const check = (value: unknown, path: string, open: WeakSet<object>): string | undefined => {
  if (value === null || typeof value === "string" || typeof value === "boolean") return undefined
  if (typeof value === "number") return Number.isFinite(value) ? undefined : `${path} (${value})`
  if (typeof value !== "object") return `${path} (${typeof value})`
  if (open.has(value)) return `${path} (circular)`
  if (Array.isArray(value)) {
    open.add(value)
    for (let i = 0; i < value.length; i++) {
      const found = check(value[i], `${path}[${i}]`, open)
      if (found !== undefined) return found
    }
    open.delete(value)
    return undefined
  }
  const proto = Object.getPrototypeOf(value)
  if (proto !== Object.prototype && proto !== null) return `${path} (${proto?.constructor?.name ?? "object"})`
  open.add(value)
  for (const [key, field] of Object.entries(value)) {
    // JSON drops the key, which an optional field reads back the same.
    if (field === undefined) continue
    const found = check(field, `${path}.${key}`, open)
    if (found !== undefined) return found
  }
  open.delete(value)
  return undefined
}

/**
 * Most bytes one stored value may take as JSON. Effect's cluster stores a message (a chunk, a
 * task call) or a reply as one row and reads a runner's messages back together; PostgreSQL's
 * client refuses a row over 16 MiB, and one such row stops every read of its runner's shards
 * (nothing more runs there). 1 MiB is left for the row's other columns and the message's
 * envelope (the JSON measured is already escaped): so close to the limit that jobs stored before
 * it existed keep their chunks (and a resubmission matches them) unless a chunk was nearly too
 * large already.
 */
export const maxStoredBytes = 15 * 1024 * 1024

/** `value` as JSON and its size in bytes. */
export const asJson = (value: unknown): { readonly text: string; readonly bytes: number } => {
  const text = JSON.stringify(value) ?? "null"
  return { text, bytes: Buffer.byteLength(text) }
}

/** Says a stored value is too large, naming what it is. */
export const tooLargeReason = (what: string, bytes: number): string =>
  `${what} is ${(bytes / 1048576).toFixed(1)} MiB as JSON; the cluster stores at most ${maxStoredBytes / 1048576} MiB in one message (PostgreSQL's client reads no row over 16 MiB)`
