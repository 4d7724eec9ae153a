import type * as Sharding from "effect/cluster/Sharding"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import { type Chunk, OriginEntity, type WireRequest } from "./model.ts"
import { durable } from "./store.ts"

/** One item as a user gives it: a URL, a plain request, or an `HttpClientRequest` with a text or empty body. */
export type Item =
  | string
  | URL
  | HttpClientRequest.HttpClientRequest
  | {
      readonly method?: string | undefined
      readonly url: string | URL
      readonly headers?: Record<string, string> | undefined
      readonly body?: string | undefined
    }

/** The job id is taken by a job with other items or options; mapped to `JobConflictError` by the caller. */
export class Conflict {
  readonly detail: string
  constructor(detail: string) {
    this.detail = detail
  }
}

const textDecoder = new TextDecoder()

/**
 * Headers that carry credentials. Items are stored in the clear (the runner that takes a chunk
 * must send them), so these are refused: the runners set them on their own `HttpClient`.
 */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie"])

const secretRefusal = (where: string) =>
  `${where} would be stored in the database in the clear; set it on the runners' HttpClient ` +
  "(HttpClient.mapRequest) instead"

/** Why these headers cannot be stored, if they cannot: one of them carries credentials. */
const refuseSecrets = (headers: Record<string, string>): string | undefined => {
  for (const key in headers) {
    if (CREDENTIAL_HEADERS.has(key.toLowerCase())) return secretRefusal(`the ${key} header`)
  }
  return undefined
}

/** The stored form of an item, or why it cannot be stored. */
export const toWire = (item: Item): WireRequest | string => {
  if (typeof item === "string" || item instanceof URL) {
    return { method: "GET", url: String(item), headers: {}, body: null }
  }
  if (HttpClientRequest.isHttpClientRequest(item)) {
    const body = item.body
    if (body._tag !== "Empty" && body._tag !== "Uint8Array") {
      return `a request body of kind ${body._tag} cannot be stored; use a string or bytes`
    }
    const refused = refuseSecrets(item.headers)
    if (refused !== undefined) return refused
    const url = new URL(item.url)
    for (const [key, value] of item.urlParams) {
      if (typeof value !== "string") return secretRefusal(`the Redacted value of URL parameter ${key}`)
      url.searchParams.append(key, value)
    }
    return {
      method: item.method,
      url: url.href,
      headers: { ...item.headers },
      body: body._tag === "Empty" ? null : textDecoder.decode(body.body)
    }
  }
  const refused = refuseSecrets(item.headers ?? {})
  if (refused !== undefined) return refused
  return { method: item.method ?? "GET", url: String(item.url), headers: item.headers ?? {}, body: item.body ?? null }
}

const originOf = (url: string): string | undefined => {
  try {
    const parsed = new URL(url)
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.origin : undefined
  } catch {
    return undefined
  }
}

// A 53-bit string hash (cyrb53): enough to tell a chunk resubmitted with other items from the same
// chunk submitted again, without node:crypto.
const hash = (text: string): string => {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ ch, 2654435761)
    h2 = Math.imul(h2 ^ ch, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)
}

const sending = 16

export interface Plan {
  readonly job: string
  readonly perHost: number
  readonly chunkSize: number
  readonly reader: string | null
}

/**
 * Stores the job, then its items chunk by chunk: items are grouped per origin, a chunk is sent
 * (one persisted message) when it holds `chunkSize` items, and the rest at the end. Chunks are
 * numbered in the order they are sent, so the same input gives the same chunks: submitting a job
 * again sends nothing new (the chunk's primary key deduplicates it) unless its items differ.
 */
export const submit = <E, R>(
  plan: Plan,
  items: Stream.Stream<Item, E, R>
): Effect.Effect<number, E | Conflict | SqlError.SqlError, R | Sharding.Sharding | SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const client = yield* OriginEntity.client
    yield* sql`insert into volley_jobs (job_id, per_host, reader, chunk_size)
      values (${plan.job}, ${plan.perHost}, ${plan.reader}, ${plan.chunkSize}) on conflict do nothing`
    const [job] = yield* sql<{ per_host: number; reader: string | null; chunk_size: number }>`
      select per_host, reader, chunk_size from volley_jobs where job_id = ${plan.job}`
    if (
      job === undefined ||
      job.per_host !== plan.perHost ||
      job.reader !== plan.reader ||
      job.chunk_size !== plan.chunkSize
    ) {
      return yield* Effect.fail(
        new Conflict(
          `job ${plan.job} exists with perHost ${job?.per_host}, reader ${job?.reader}, chunkSize ${job?.chunk_size}; ` +
            `submitted again with perHost ${plan.perHost}, reader ${plan.reader}, chunkSize ${plan.chunkSize}`
        )
      )
    }
    const buffers = new Map<string, Array<Chunk["items"][number]>>()
    let chunks = 0
    let total = 0
    const store = (chunk: Chunk) =>
      Effect.gen(function* () {
        const digest = hash(JSON.stringify(chunk.items))
        yield* durable(sql`insert into volley_chunks (job_id, chunk, origin, size, hash)
          values (${plan.job}, ${chunk.chunk}, ${chunk.origin}, ${chunk.items.length}, ${digest}) on conflict do nothing`)
        const [stored] = yield* sql<{
          hash: string
        }>`select hash from volley_chunks where job_id = ${plan.job} and chunk = ${chunk.chunk}`
        if (stored?.hash !== digest) {
          return yield* Effect.fail(
            new Conflict(
              `job ${plan.job} exists with other items (chunk ${chunk.chunk}, items from ${chunk.items[0]?.index})`
            )
          )
        }
        yield* Effect.orDie(client(chunk.origin).RunChunk(chunk, { discard: true }))
      })
    // Chunks are numbered here, in input order, then stored and sent up to `sending` at once: a
    // persisted send waits for its storage round trips, and sending one at a time made submitting
    // the bottleneck of a whole job (80 chunks took 18 s on a busy 2-core machine).
    const permits = yield* Semaphore.make(sending)
    const sends: Array<Fiber.Fiber<void, Conflict | SqlError.SqlError>> = []
    const send = (origin: string, items: Chunk["items"]) => {
      const chunk: Chunk = { job: plan.job, chunk: chunks++, origin, perHost: plan.perHost, reader: plan.reader, items }
      return Effect.flatMap(permits.take(1), () =>
        Effect.map(Effect.forkChild(Effect.ensuring(store(chunk), permits.release(1))), (fiber) => {
          sends.push(fiber)
        })
      )
    }
    const invalid = (index: number, reason: string): Effect.Effect<void, SqlError.SqlError> =>
      durable(sql`insert into volley_results (job_id, item, chunk, origin, ok, error_tag, error_message, runner)
        values (${plan.job}, ${index}, ${-1}, ${""}, false, ${"InvalidItem"}, ${reason}, ${"client"}) on conflict do nothing`).pipe(
        Effect.asVoid
      )
    yield* Stream.runForEach(items, (item) => {
      const index = total++
      const wire = toWire(item)
      if (typeof wire === "string") return invalid(index, wire)
      const origin = originOf(wire.url)
      if (origin === undefined) return invalid(index, `not an http(s) URL: ${wire.url}`)
      let buffer = buffers.get(origin)
      if (buffer === undefined) {
        buffer = []
        buffers.set(origin, buffer)
      }
      buffer.push({ index, request: wire })
      if (buffer.length < plan.chunkSize) return Effect.void
      buffers.delete(origin)
      return send(origin, buffer)
    })
    for (const [origin, buffer] of buffers) yield* send(origin, buffer)
    yield* Fiber.joinAll(sends)
    const [stored] = yield* sql<{
      total: string | number | null
    }>`select total from volley_jobs where job_id = ${plan.job}`
    if (stored?.total !== null && stored?.total !== undefined && Number(stored.total) !== total) {
      return yield* Effect.fail(
        new Conflict(`job ${plan.job} exists with ${stored.total} items; submitted again with ${total}`)
      )
    }
    yield* sql`update volley_jobs set total = ${total} where job_id = ${plan.job}`
    // Every item may already have an outcome (all invalid, or a job submitted again after it ran).
    yield* sql`update volley_jobs set finished_at = now()
      where job_id = ${plan.job} and finished_at is null
        and total = (select count(*) from volley_results where job_id = ${plan.job})`
    return total
  })
