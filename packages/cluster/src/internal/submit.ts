import * as Http from "@volley/core/Http"
import type * as Cause from "effect/Cause"
import type * as ClusterError from "effect/cluster/ClusterError"
import type * as Sharding from "effect/cluster/Sharding"
import * as Effect from "effect/Effect"
import * as Headers from "effect/http/Headers"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as UrlParams from "effect/http/UrlParams"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import { maxStoredBytes, tooLargeReason } from "./json.ts"
import { type Chunk, OriginEntity, type WireRequest } from "./model.ts"
import { claimChunk, durable, isForeignKeyViolation, type JobRow, storable } from "./store.ts"

/** One item as a user gives it: a URL, a plain request, or an `HttpClientRequest` with a text, bytes or empty body. */
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

/**
 * The job this submission was storing was forgotten meanwhile (its row deleted, perhaps made again
 * by another submission: another nonce); mapped to `JobNotFoundError` by the caller.
 */
export class Forgotten {
  readonly _tag = "Forgotten"
  readonly detail: string
  constructor(detail: string) {
    this.detail = detail
  }
}

/** Errors of a chunk's send, as Effect's entity client gives them. */
export type SendCause =
  | ClusterError.MailboxFull
  | ClusterError.AlreadyProcessingMessage
  | ClusterError.PersistenceError
  | ClusterError.EntityNotAssignedToRunner

/** A chunk could not be handed to Effect's cluster; mapped to `ChunkSendError` by the caller. */
export class SendFailed {
  readonly job: string
  readonly chunk: number
  readonly origin: string
  readonly cause: SendCause
  constructor(job: string, chunk: number, origin: string, cause: SendCause) {
    this.job = job
    this.chunk = chunk
    this.origin = origin
    this.cause = cause
  }
}

// Fatal: bytes that are not UTF-8 are carried as base64 rather than replaced with U+FFFD. A
// leading BOM is a byte of the body like any other, kept.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** A byte body as stored: as text when it is UTF-8 (so a text body's hash is what it always was), else base64. */
const wireBody = (bytes: Uint8Array): Pick<WireRequest, "body" | "bodyEncoding"> => {
  try {
    return { body: utf8.decode(bytes) }
  } catch {
    return {
      body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64"),
      bodyEncoding: "base64"
    }
  }
}

/**
 * Headers that carry credentials. Items are stored in the clear (the runner that takes a chunk
 * must send them), so these are refused: the runners set them on their own `HttpClient`. Those
 * the submitting fiber's `Headers.CurrentRedactedNames` names are refused too (see
 * {@link SecretNames}); these are whatever that list says, as a list of one's own replaces
 * Effect's defaults.
 */
const CREDENTIAL_HEADERS = new Set(["authorization", "proxy-authorization", "cookie", "x-api-key"])

const secretRefusal = (where: string) =>
  `${where} would be stored in the database in the clear; set it on the runners' HttpClient ` +
  "(HttpClient.mapRequest) instead"

/**
 * The names the submitting fiber treats as secrets: Effect's `Headers.CurrentRedactedNames`
 * (`authorization`, `cookie`, `set-cookie`, `x-api-key` by default) and
 * `UrlParams.CurrentRedactedNames` (signed-URL parameters by default). What Effect would redact in
 * an error or a span is not stored in the clear either.
 */
export interface SecretNames {
  readonly headers: ReadonlyArray<string | RegExp>
  readonly urlParams: ReadonlyArray<string | RegExp>
}

/** The submitting fiber's {@link SecretNames}. */
export const secretNames: Effect.Effect<SecretNames> = Effect.map(
  Effect.all([Headers.CurrentRedactedNames, UrlParams.CurrentRedactedNames]),
  ([headers, urlParams]) => ({ headers, urlParams })
)

/** Why these headers cannot be stored, if they cannot: one of them carries credentials. */
const refuseSecrets = (headers: Record<string, string>, names: SecretNames): string | undefined => {
  for (const key in headers) {
    // Lower-cased as Effect holds a request's header names: its patterns are tested against those.
    // Trimmed: `"Authorization "` can never be sent (not a header name), but was stored, in clear.
    const name = key.trim().toLowerCase()
    if (CREDENTIAL_HEADERS.has(name) || Headers.isRedactedName(name, names.headers)) {
      return secretRefusal(`the ${key} header`)
    }
  }
  return undefined
}

/** Why this URL cannot be stored, if it cannot: a query parameter of it is named as a secret. */
const refuseSecretParams = (url: URL, names: SecretNames): string | undefined => {
  if (url.search === "" || names.urlParams.length === 0) return undefined
  for (const key of url.searchParams.keys()) {
    if (UrlParams.isRedactedName(key, names.urlParams)) return secretRefusal(`the URL parameter ${key}`)
  }
  return undefined
}

/** The stored form of an item, or why it cannot be stored. */
export const toWire = (item: Item, names: SecretNames): WireRequest | string => {
  if (typeof item === "string" || item instanceof URL) {
    return { method: "GET", url: String(item), headers: {}, body: null }
  }
  if (HttpClientRequest.isHttpClientRequest(item)) {
    const body = item.body
    if (body._tag !== "Empty" && body._tag !== "Uint8Array") {
      return `a request body of kind ${body._tag} cannot be stored; use a string or bytes`
    }
    const refused = refuseSecrets(item.headers, names)
    if (refused !== undefined) return refused
    const url = URL.parse(item.url)
    // Refused by `classify` with the reason a string item gets (a request does not check its URL).
    if (url === null) return { method: item.method, url: item.url, headers: { ...item.headers }, body: null }
    for (const [key, value] of item.urlParams) {
      if (typeof value !== "string") return secretRefusal(`the Redacted value of URL parameter ${key}`)
      url.searchParams.append(key, value)
    }
    return {
      method: item.method,
      url: url.href,
      headers: { ...item.headers },
      ...(body._tag === "Empty" ? { body: null } : wireBody(body.body))
    }
  }
  // Untyped input (items read from JSON at run time): no item at all, else its fields are checked
  // by `malformed`.
  if (item === null || item === undefined) return `not an item: ${item} (a URL, a request or { url })`
  const refused = refuseSecrets(item.headers ?? {}, names)
  if (refused !== undefined) return refused
  return { method: item.method ?? "GET", url: String(item.url), headers: item.headers ?? {}, body: item.body ?? null }
}

/**
 * What is wrong with a plain item's fields, if they are not the declared ones (untyped input: a
 * method, a header value or a body that is not a string, headers that are not an object). Such an
 * item failed its chunk's send with a defect (the message schema refused it), which stopped the
 * submit, and its claimed chunk made the corrected input a `JobConflictError`. No value is quoted:
 * a header's may be a secret.
 */
const malformed = (wire: WireRequest): string | undefined => {
  const { method, headers, body } = wire as {
    readonly method: unknown
    readonly headers: unknown
    readonly body: unknown
  }
  if (typeof method !== "string") return `the method must be a string, got ${kind(method)}`
  if (typeof headers !== "object" || headers === null || Array.isArray(headers)) {
    return `headers must be an object of strings, got ${kind(headers)}`
  }
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== "string") return `the value of the ${name} header must be a string, got ${kind(value)}`
  }
  if (body !== null && typeof body !== "string") {
    return `the body must be a string (send bytes as an HttpClientRequest), got ${kind(body)}`
  }
  return undefined
}

const kind = (value: unknown): string =>
  value === null
    ? "null"
    : Array.isArray(value)
      ? "an array"
      : typeof value === "object"
        ? (Object.getPrototypeOf(value)?.constructor?.name ?? "an object")
        : typeof value

const parseUrl = (url: string): URL | undefined => {
  try {
    return new URL(url)
  } catch {
    return undefined
  }
}

/**
 * Where the userinfo of a URL that does not parse would start: after `scheme:` and its slashes, which
 * the URL parser takes in any number and mixed with `\` (`http:eve@`, `http:/eve@`, `http:\\eve@`,
 * `https:///eve@`), or after the leading slashes of a URL without a scheme (`//eve@`). `//` is tried
 * first, so a URL the previous `scheme://` pattern stripped is quoted as before (job hashes use it).
 */
const userinfoOfUnparsed =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the URL parser skips leading C0 controls and spaces
  /^((?:[^:/?#]*:(?:\/\/|[/\\\t\n\r]*))|(?:[\x00-\x20]*[/\\][\t\n\r]*[/\\][/\\\t\n\r]*))[^/?#]*@/

/**
 * A URL that does not parse as an invalid item's reason may quote it (the reason is stored and
 * returned by `results`): everything from where its userinfo would start up to the last `@` before
 * the next `/`, `?` or `#` is removed (at worst more than the userinfo, never less); a URL without
 * such an `@` is quoted unchanged. (One that parses with a userinfo is refused before this.) A
 * password holding a `/`, `?` or `#` (`http://eve:pa/ss@host`) is left to `Http.redactUrl`, which
 * quotes it as `REDACTED:REDACTED@`: stripped here, the reason of a job submitted before would change.
 */
const withoutUserinfo = (url: string): string => url.replace(userinfoOfUnparsed, "$1")

// The origin is the entity id, and Effect's cluster stores entity ids in a VARCHAR(255) column
// (cluster_messages.entity_id): a longer one fails the send of its chunk.
const maxOriginLength = 255

/** An item once read: a request to run at an origin, or why it cannot run (its `InvalidItem` outcome). */
type Classified =
  | {
      readonly _tag: "Request"
      readonly origin: string
      readonly request: WireRequest
      /** The request as JSON (hashed and measured once) and its size in bytes. */
      readonly json: string
      readonly bytes: number
    }
  | { readonly _tag: "Invalid"; readonly reason: string }

const classify = (item: Item, names: SecretNames): Classified => {
  const wire = toWire(item, names)
  if (typeof wire === "string") return { _tag: "Invalid", reason: wire }
  const parsed = parseUrl(wire.url)
  // A URL's user:password would be stored, and sent by any runner, like an Authorization header.
  if (parsed !== undefined && (parsed.username !== "" || parsed.password !== "")) {
    return { _tag: "Invalid", reason: secretRefusal("the user:password in the URL") }
  }
  const refused = parsed === undefined ? undefined : refuseSecretParams(parsed, names)
  if (refused !== undefined) return { _tag: "Invalid", reason: refused }
  if (parsed === undefined || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
    return {
      _tag: "Invalid",
      reason: `not an http(s) URL: ${parsed === undefined ? Http.redactUrl(withoutUserinfo(wire.url), names.urlParams) : wire.url}`
    }
  }
  const origin = parsed.origin
  if (origin.length > maxOriginLength) {
    return {
      _tag: "Invalid",
      reason: `the origin ${origin.slice(0, 64)}... is ${origin.length} characters; the cluster stores at most ${maxOriginLength}`
    }
  }
  // After the URL's checks, so an item they refused keeps its reason (a job's hash holds it); before
  // JSON.stringify, which throws on a bigint.
  const wrong = malformed(wire)
  if (wrong !== undefined) return { _tag: "Invalid", reason: wrong }
  // A chunk is one stored message (see `maxStoredBytes`): an item that alone would pass it is refused.
  const json = JSON.stringify(wire)
  const bytes = Buffer.byteLength(json)
  if (bytes > maxStoredBytes) return { _tag: "Invalid", reason: tooLargeReason("the request", bytes) }
  return { _tag: "Request", origin, request: wire, json, bytes }
}

// A 53-bit string hash (cyrb53), fed in pieces: enough to tell a job or chunk resubmitted with other
// items from the same one submitted again, without node:crypto.
class Hasher {
  private h1 = 0xdeadbeef
  private h2 = 0x41c6ce57
  update(text: string): this {
    for (let i = 0; i < text.length; i++) {
      const ch = text.charCodeAt(i)
      this.h1 = Math.imul(this.h1 ^ ch, 2654435761)
      this.h2 = Math.imul(this.h2 ^ ch, 1597334677)
    }
    return this
  }
  digest(): string {
    let h1 = this.h1
    let h2 = this.h2
    h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
    h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
    return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)
  }
}

const hash = (text: string): string => new Hasher().update(text).digest()

/** A chunk's hash, stored with it, which a resubmission compares with its own chunk of that number. */
export const chunkHash = (items: Chunk["items"]): string => hash(JSON.stringify(items))

/**
 * An item's line in the job's hash. Invalid items count too (by their reason, which names the URL
 * when that is what is wrong), so an index that held an invalid item cannot silently take a valid one.
 */
const hashLine = (item: Classified): string =>
  `${item._tag === "Request" ? item.json : JSON.stringify({ invalid: item.reason })}\n`

const sending = 16

/**
 * Invalid items' outcomes are written in batches of this many as the input is read, each claimed
 * as a chunk of its own (see {@link submit}); the rest with the total. So a submit holds at most
 * this many (about 375 bytes each) rather than every one until its input ends.
 */
const invalidBatch = 1000

/**
 * What a submit holds at most in chunks not yet full (the items of origins that have fewer than
 * `chunkSize` so far), in items and in bytes of their requests as JSON. Past either, the oldest of
 * these chunks (by when their first item was read) are sent as they are, until half of each is
 * left. Which ones depends only on the input (and `chunkSize`), so the same input still gives the
 * same chunks, and an input that never passes them gives the chunks it always did. A URL item
 * held costs about 300 bytes of memory: 100,000 of them about 30 MB.
 */
export interface BufferLimit {
  readonly items: number
  readonly bytes: number
}

/** The {@link BufferLimit} of every submit: its chunks are compared with a resubmission's, so it is fixed. */
export const bufferLimit: BufferLimit = { items: 100_000, bytes: 64 * 1024 * 1024 }

/**
 * How many stored chunks a resubmission of a partly submitted job reads at once: it compares them
 * with its own as its input reaches their numbers, holding one page of them at a time.
 */
export const storedPage = 1000

export interface Plan {
  readonly job: string
  readonly perHost: number
  readonly chunkSize: number
  readonly reader: string | null
}

/**
 * Stores the job, then its items chunk by chunk: items are grouped per origin, a chunk is sent
 * (one persisted message) when it holds `chunkSize` items, when the chunks not yet full pass
 * `limit` (the oldest of them; see {@link BufferLimit}), and the rest at the end. Chunks are
 * numbered in the order they are sent, so the same input gives the same chunks. So a submit holds
 * at most `limit` of items, `invalidBatch` invalid ones and `sending` sends, whatever its input (a
 * resubmission of a partly submitted job also holds `page` of the chunks stored, their numbers and hashes).
 *
 * A job id that exists is checked before anything of this submission is sent or written:
 * - submitted in full before (its total and hash are stored): the items are read and hashed only,
 *   and nothing is sent; other items (their count, or any of them, invalid ones included) are a
 *   `Conflict`, and the job forgotten before that check is done `Forgotten`.
 * - partly submitted (a client stopped mid-submit, or is submitting it now): each stored chunk is
 *   compared with the one this input gives (and sent again: its primary key holds the job's
 *   nonce, so it runs once); new chunks wait until every stored chunk matched. A job made by a
 *   version before `limit` (see `storedOther`) gets the chunks that version made, as long as its
 *   stored ones last: no chunk not yet full is sent early where it stored another.
 *
 * Two submissions of one id at the same time: each chunk is claimed in the database (stored under
 * its number, or compared with the one stored) one after another, in order, before it is sent, so
 * the one that meets another's chunk first stops there, having sent only chunks equal to the
 * other's. Invalid items' outcomes are claimed the same way, as chunks of their own (origin `""`,
 * size 0, never sent) of `invalidBatch` outcomes, written once claimed: a chunk is the same for
 * every submission that claims it, so these items are invalid in the job that wins. The total and
 * hash are recorded in one transaction with the check that no chunk past this input's last was
 * claimed, the last invalid items' outcomes, and the job's finish when every item has an outcome:
 * the loser of that step writes nothing, and no chunk is claimed after it.
 *
 * Everything is written only while the job's row holds the nonce read at the start: a job
 * forgotten (and perhaps submitted again by another client) meanwhile fails this submit with
 * `Forgotten`, and the job now under the id is left to its own submission.
 */
export const submit = <E, R>(
  plan: Plan,
  items: Stream.Stream<Item, E, R>,
  limit: BufferLimit = bufferLimit,
  page: number = storedPage
): Effect.Effect<
  number,
  E | Conflict | Forgotten | SendFailed | SqlError.SqlError,
  R | Sharding.Sharding | SqlClient.SqlClient
> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const client = yield* OriginEntity.client
    const names = yield* secretNames
    // The row's nonce (a column default) is this submission's: kept while the row lives, new after a forget.
    // The row, new or existing, comes back from this one statement (read by one of its own, it could
    // be forgotten in between): the no-op update makes PostgreSQL return the row the insert met, or
    // insert once a forget's delete of it commits.
    const rows = yield* sql<JobRow & { readonly bounded: boolean | null }>`insert into volley_jobs
        (job_id, per_host, reader, chunk_size, bounded)
      values (${plan.job}, ${plan.perHost}, ${plan.reader}, ${plan.chunkSize}, true)
      on conflict (job_id) do update set nonce = volley_jobs.nonce
      returning per_host, reader, chunk_size, total, cancelled_at, finished_at, nonce, hash, bounded`
    const job = rows[0]!
    if (job.per_host !== plan.perHost || job.reader !== plan.reader || job.chunk_size !== plan.chunkSize) {
      return yield* Effect.fail(
        new Conflict(
          `job ${plan.job} exists with perHost ${job.per_host}, reader ${job.reader}, chunkSize ${job.chunk_size}; ` +
            `submitted again with perHost ${plan.perHost}, reader ${plan.reader}, chunkSize ${plan.chunkSize}`
        )
      )
    }
    const jobHash = new Hasher()
    let total = 0
    const compare = (storedTotal: number, storedHash: string | null) =>
      storedTotal !== total
        ? Effect.fail(new Conflict(`job ${plan.job} exists with ${storedTotal} items; submitted again with ${total}`))
        : storedHash !== null && storedHash !== jobHash.digest()
          ? Effect.fail(new Conflict(`job ${plan.job} exists with other items (the same number, ${total})`))
          : Effect.void

    const forgotten = () =>
      new Forgotten(`it was forgotten while this submit stored it (the id may hold a job submitted since)`)
    // The job is finished once every item has an outcome. Also run after the total's commit: an
    // outcome written meanwhile was seen neither by its runner's check (no total then) nor by the
    // one in the transaction. Says whether the job is still this submission's (the update matches
    // no row for a finished job too, so that is a count of its own, as in `writeInvalid`).
    const finish = Effect.map(
      sql<{ live: string | number }>`with job as (
          select 1 from volley_jobs where job_id = ${plan.job} and nonce = ${job.nonce}
        ), finished as (
          update volley_jobs set finished_at = now()
          where job_id = ${plan.job} and nonce = ${job.nonce} and finished_at is null
            and total = (select count(*) from volley_results where job_id = ${plan.job})
        )
        select count(*) as live from job`,
      (rows) => Number(rows[0]?.live ?? 0) > 0
    )

    if (job.total !== null && job.hash !== null) {
      // Submitted in full before: every chunk is stored in Effect's cluster already. Sending any
      // before the whole input is compared would run the items of a submit about to be rejected.
      yield* Stream.runForEach(items, (item) =>
        Effect.sync(() => {
          total++
          jobHash.update(hashLine(classify(item, names)))
        })
      )
      yield* compare(Number(job.total), job.hash)
      // The submit that recorded the total may have stopped (a crash, a restart) before the finish.
      // The job compared with may have been forgotten (and submitted again) while the input was read.
      if (!(yield* durable(finish))) return yield* Effect.fail(forgotten())
      return total
    }

    // The chunks stored when this submit started (numbered up to `lastStored`: a submission claims
    // them in order, so these are the job's first ones), read in pages of `page` as this input reaches
    // their numbers, never all at once: a job of millions of items may have as many chunks. Chunks
    // claimed by another submission meanwhile are met by `claimChunk`.
    const [max] = yield* sql<{ last: number | null }>`select max(c.chunk) as last from volley_chunks c
      join volley_jobs j on j.job_id = c.job_id where c.job_id = ${plan.job} and j.nonce = ${job.nonce}`
    const lastStored = max?.last ?? -1
    type Stored = { readonly chunk: number; readonly origin: string; readonly size: number; readonly hash: string }
    let stored: ReadonlyArray<Stored> = []
    let at = 0
    // The stored chunk numbered `chunk`, or the first one past it. Asked for in increasing order.
    const storedFrom = (chunk: number): Effect.Effect<Stored | undefined, Forgotten | SqlError.SqlError> =>
      Effect.suspend(() => {
        while (at < stored.length && stored[at]!.chunk < chunk) at++
        if (at < stored.length) return Effect.succeed(stored[at])
        if (chunk > lastStored) return Effect.succeed(undefined)
        return Effect.flatMap(
          durable(sql<Stored>`select c.chunk, c.origin, c.size, c.hash from volley_chunks c join volley_jobs j on j.job_id = c.job_id
            where c.job_id = ${plan.job} and j.nonce = ${job.nonce} and c.chunk >= ${chunk} and c.chunk <= ${lastStored}
            order by c.chunk limit ${page}`),
          (rows) => {
            stored = rows
            at = 0
            // Chunk `lastStored` was stored: none left means the job was deleted (forgotten) since.
            return rows.length === 0 ? Effect.fail(forgotten()) : Effect.succeed(rows[0])
          }
        )
      })
    // A job whose total is stored (by a version before the job hash) has all of its chunks.
    const complete = job.total !== null
    type Step = Effect.Effect<void, Conflict | Forgotten | SqlError.SqlError, SqlClient.SqlClient>
    const held: Array<Step> = []
    // New chunks wait until every stored chunk has matched this input (chunks left by a version
    // that stored them out of order may follow a gap): until then, this submit may still turn out
    // to be a conflict, and must have run nothing. Chunks are placed in order, so those stored
    // before `chunk` have matched.
    const act = (chunk: number, effect: Step) =>
      chunk < lastStored ? Effect.sync(() => void held.push(effect)) : effect
    const release = Effect.suspend(() => Effect.forEach(held.splice(0), (effect) => effect, { discard: true }))

    const otherItems = (chunk: number, first: number | undefined) =>
      new Conflict(`job ${plan.job} exists with other items (chunk ${chunk}, items from ${first})`)
    const noChunk = (chunk: number, first: number | undefined) =>
      new Conflict(`job ${plan.job} exists with other items (it has no chunk ${chunk}, items from ${first})`)
    // Each origin's chunk not yet full, and the bytes of its requests as JSON; in the order they were
    // started, the order they are sent in at the end of the input.
    const buffers = new Map<string, { readonly items: Array<Chunk["items"][number]>; bytes: number }>()
    // Items and bytes in all of them, held under `limit`.
    let bufferedItems = 0
    let bufferedBytes = 0
    let chunks = 0
    // Chunks are numbered here, in input order, claimed one at a time (a chunk claimed before the
    // previous one matched could be another submission's undoing), then sent up to `sending` at
    // once: a persisted send waits for its storage round trips, and sending one at a time made
    // submitting the bottleneck of a whole job (80 chunks took 18 s on a busy 2-core machine).
    // Sends are not kept once done (a job of many origins has one per few items): the submit waits
    // for all of them by taking every permit, and fails with the first failure.
    const permits = yield* Semaphore.make(sending)
    let sendFailure: Cause.Cause<SendFailed> | undefined
    const sendChunk = (chunk: Chunk) =>
      client(chunk.origin)
        .RunChunk(chunk, { discard: true })
        .pipe(Effect.mapError((cause) => new SendFailed(plan.job, chunk.chunk, chunk.origin, cause)))
    // A chunk as it is claimed: its number, origin, size and hash, and its first item's index.
    interface Claim {
      readonly chunk: number
      readonly origin: string
      readonly size: number
      readonly digest: string
      readonly first: number | undefined
    }
    // Claims a chunk (see the function's comment), then does what follows once it is the job's.
    const claim = ({ chunk, origin, size, digest, first }: Claim, then: Step) =>
      Effect.gen(function* () {
        const claimed = yield* claimChunk(plan.job, job.nonce, { chunk, origin, size }, digest)
        if (claimed._tag === "Forgotten") return yield* Effect.fail(forgotten())
        if (claimed.hash !== digest) {
          return yield* Effect.fail(claimed.hash === undefined ? noChunk(chunk, first) : otherItems(chunk, first))
        }
        yield* then
      })
    const place = (placed: Claim, then: Step) =>
      Effect.flatMap(storedFrom(placed.chunk), (next) => {
        const { chunk, digest, first } = placed
        if (next?.chunk !== chunk)
          return complete ? Effect.fail(noChunk(chunk, first)) : act(chunk, claim(placed, then))
        if (next.hash !== digest) return Effect.fail(otherItems(chunk, first))
        // A stored chunk is claimed (and sent, or its outcomes written) again: it adds nothing new
        // (it was the job's already), and the last submit may have stopped before it did either.
        return Effect.andThen(claim(placed, then), chunk === lastStored ? release : Effect.void)
      })
    const send = (origin: string, items: Chunk["items"]) =>
      Effect.suspend(() => {
        const chunk: Chunk = {
          job: plan.job,
          nonce: job.nonce,
          chunk: chunks++,
          origin,
          perHost: plan.perHost,
          reader: plan.reader,
          items
        }
        const forked = Effect.gen(function* () {
          yield* permits.take(1)
          yield* Effect.forkChild(
            sendChunk(chunk).pipe(
              Effect.catchCause((cause) =>
                Effect.sync(() => {
                  sendFailure ??= cause
                })
              ),
              Effect.ensuring(permits.release(1))
            )
          )
        })
        const digest = chunkHash(items)
        return place({ chunk: chunk.chunk, origin, size: items.length, digest, first: items[0]?.index }, forked)
      })
    const sendBuffer = (origin: string, buffer: { readonly items: Chunk["items"]; readonly bytes: number }) => {
      bufferedItems -= buffer.items.length
      bufferedBytes -= buffer.bytes
      return send(origin, buffer.items)
    }
    // A job submitted in part by a version before `limit` (its row has no `bounded`) held its chunks
    // not yet full until its input ended, the chunks it stored included: the number the oldest of
    // them would take here may hold one of those, still to come from this input. Comparing the
    // origin and size first hashes only a chunk that may be the one stored.
    const storedOther = (chunk: number, origin: string, items: Chunk["items"]) =>
      job.bounded === true
        ? Effect.succeed(false)
        : Effect.map(
            storedFrom(chunk),
            (stored) =>
              stored?.chunk === chunk &&
              (stored.origin !== origin || stored.size !== items.length || stored.hash !== chunkHash(items))
          )
    // Sends the oldest chunks not yet full until half of `limit` is left; for a job submitted in part
    // before `limit`, none where it stored another chunk (its layout, and memory, while they last).
    const sendOldest: Step = Effect.gen(function* () {
      for (const [origin, buffer] of buffers) {
        if (bufferedItems <= limit.items / 2 && bufferedBytes <= limit.bytes / 2) return
        if (yield* storedOther(chunks, origin, buffer.items)) return
        buffers.delete(origin)
        yield* sendBuffer(origin, buffer)
      }
    })
    type Invalid = { readonly index: number; readonly reason: string }
    // One statement, written only while the job is this submission's (like a runner's outcomes).
    const writeInvalid = (batch: ReadonlyArray<Invalid>) =>
      Effect.flatMap(
        sql<{ live: string | number }>`with job as (
            select 1 from volley_jobs where job_id = ${plan.job} and nonce = ${job.nonce}
          ), written as (
            insert into volley_results (job_id, item, chunk, origin, ok, error_tag, error_message, runner)
            select ${plan.job}::text, r.item, -1, '', false, 'InvalidItem', r.message, 'client'
            from job, json_to_recordset(${JSON.stringify(
              batch.map(({ index, reason }) => ({ item: index, message: storable(reason) }))
            )}::json) as r(item bigint, message text)
            on conflict do nothing
          )
          select count(*) as live from job`.pipe(
          // Deleted between the statement's snapshot and its insert.
          Effect.catchIf(isForeignKeyViolation, () => Effect.succeed([]))
        ),
        (rows) => (Number(rows[0]?.live ?? 0) > 0 ? Effect.void : Effect.fail(forgotten()))
      )
    let invalid: Array<Invalid> = []
    const writeBatch = Effect.suspend(() => {
      const batch = invalid
      invalid = []
      const digest = hash(JSON.stringify(batch.map(({ index, reason }) => ({ index, invalid: reason }))))
      return place(
        { chunk: chunks++, origin: "", size: 0, digest, first: batch[0]?.index },
        durable(writeInvalid(batch))
      )
    })
    yield* Stream.runForEach(items, (item) => {
      const index = total++
      const classified = classify(item, names)
      jobHash.update(hashLine(classified))
      if (classified._tag === "Invalid") {
        invalid.push({ index, reason: classified.reason })
        // A job completed by a version before the job hash has no such chunks: kept for the total.
        return invalid.length < invalidBatch || complete ? Effect.void : writeBatch
      }
      const origin = classified.origin
      // Run in this order, which numbers the chunks.
      const sent: Array<Step> = []
      let buffer = buffers.get(origin)
      // A chunk ends before its items would pass what one stored message may take. Its successor
      // keeps its place in `buffers` (as it always has: it orders the chunks sent at the end).
      if (buffer !== undefined && buffer.bytes + classified.bytes > maxStoredBytes) {
        sent.push(sendBuffer(origin, buffer))
        buffer = undefined
      }
      if (buffer === undefined) {
        buffer = { items: [], bytes: 0 }
        buffers.set(origin, buffer)
      }
      buffer.items.push({ index, request: classified.request })
      buffer.bytes += classified.bytes
      bufferedItems++
      bufferedBytes += classified.bytes
      if (buffer.items.length >= plan.chunkSize) {
        buffers.delete(origin)
        sent.push(sendBuffer(origin, buffer))
      }
      if (bufferedItems > limit.items || bufferedBytes > limit.bytes) sent.push(sendOldest)
      return sent.length === 0 ? Effect.void : Effect.forEach(sent, (step) => step, { discard: true })
    })
    for (const [origin, buffer] of buffers) yield* send(origin, buffer.items)
    if (chunks <= lastStored) {
      const missing = yield* storedFrom(chunks)
      return yield* Effect.fail(
        new Conflict(
          `job ${plan.job} exists with other items (chunk ${missing?.chunk}, which this submission does not have)`
        )
      )
    }
    yield* permits.take(sending)
    if (sendFailure !== undefined) return yield* Effect.failCause(sendFailure)
    const digest = jobHash.digest()
    // Only the first complete submission records the total and hash; a stored total that differs
    // keeps its hash. The update locks the job's row until the commit, so a chunk claimed at the same
    // time (`claimChunk` locks it FOR SHARE) is either seen by the check after it or never stored.
    yield* durable(
      sql.withTransaction(
        Effect.gen(function* () {
          const [stored] = yield* sql<{ total: string | number; hash: string | null }>`update volley_jobs
            set total = coalesce(total, ${total}),
              hash = case when coalesce(total, ${total}) = ${total} then coalesce(hash, ${digest}) else hash end
            where job_id = ${plan.job} and nonce = ${job.nonce} returning total, hash`
          if (stored === undefined) return yield* Effect.fail(forgotten())
          yield* compare(Number(stored.total), stored.hash)
          const [beyond] = yield* sql<{
            chunk: number
          }>`select chunk from volley_chunks where job_id = ${plan.job} and chunk >= ${chunks} order by chunk limit 1`
          if (beyond !== undefined) {
            return yield* Effect.fail(
              new Conflict(
                `job ${plan.job} exists with other items (chunk ${beyond.chunk}, which this submission does not have)`
              )
            )
          }
          // Fewer than `invalidBatch`, and this submission's: the update above locked the job's row.
          if (invalid.length > 0) yield* writeInvalid(invalid)
          // Every item may already have an outcome (all invalid, or all chunks run before the total).
          yield* finish
        })
      )
    )
    // A forget since the commit came after this job was stored in full: the total stands.
    yield* durable(finish)
    return total
  })
