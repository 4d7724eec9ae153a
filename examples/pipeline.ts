// HTTP -> worker threads: 200 gzipped JSON documents fetched from an embedded server flow into
// a CPU stage on worker threads (gunzip + JSON.parse + sha256). Work is bounded end to end: a
// body counts from its request's start until the stage is done with it, so with
// `concurrency: 8, buffer: 4` at most 12 bodies exist at once, however slow the stage.
// Two documents are missing (404) and two are corrupt (not gzip): `pipelineSettled` keeps every
// item's outcome, so they fail on their own and the other 196 are digested. The CPU stage lives
// in examples/tasks/pipeline.ts: pool threads import a task's module, never this entry module.
//
//   pnpm example examples/pipeline.ts
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { gzipSync } from "node:zlib"
import { NodeRuntime } from "@effect/platform-node"
import { Blocking, Fanout } from "@volley/core"
import { NodeBlocking, NodeHttpClient } from "@volley/node"
import { Console, Effect, Layer, Result, Stream } from "effect"
import { digest } from "./tasks/pipeline.ts"

const documents = Effect.acquireRelease(
  Effect.callback<ReturnType<typeof createServer>>((resume) => {
    const server = createServer((req, res) => {
      const id = Number(new URL(req.url ?? "/", "http://x").searchParams.get("id"))
      if (id === 13 || id === 113) return res.writeHead(404).end("no such document")
      if (id === 42 || id === 142) return res.writeHead(200, { "content-type": "application/gzip" }).end("not gzip")
      const records = Array.from({ length: 1_000 }, (_, n) => ({ n, id, name: `record ${n} of ${id}` }))
      res.writeHead(200, { "content-type": "application/gzip" }).end(gzipSync(JSON.stringify({ id, records })))
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.callback<void>((resume) => void server.close(() => resume(Effect.void)))
).pipe(Effect.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`))

const program = Effect.gen(function* () {
  const url = yield* documents
  const urls = Array.from({ length: 200 }, (_, id) => `${url}/doc?id=${id}`)
  // Warm-up: both threads load the task module (about a second) before the clock starts.
  const empty = gzipSync(JSON.stringify({ id: -1, records: [] }))
  yield* Effect.all([Blocking.run(digest, new Uint8Array(empty)), Blocking.run(digest, new Uint8Array(empty))], {
    concurrency: 2
  })
  let held = 0
  let maxHeld = 0
  const started = performance.now()
  const results = yield* Fanout.pipelineSettled(
    urls,
    (item) =>
      Blocking.run(digest, item.value).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            held--
          })
        )
      ),
    {
      concurrency: 8,
      buffer: 4,
      stageConcurrency: 4,
      read: (response) =>
        Effect.map(response.arrayBuffer, (body) => {
          maxHeld = Math.max(maxHeld, ++held)
          return new Uint8Array(body)
        })
    }
  ).pipe(Stream.runCollect)
  const digested = results.flatMap((r) => (Result.isSuccess(r.result) ? [r.result.success] : []))
  const records = digested.reduce((sum, doc) => sum + doc.records, 0)
  yield* Console.log(
    `${digested.length} documents, ${records.toLocaleString("en")} records digested on worker threads in ` +
      `${Math.round(performance.now() - started)} ms; at most ${maxHeld} bodies held at once (bound 12)`
  )
  for (const { index, result } of results.sort((a, b) => a.index - b.index)) {
    if (Result.isFailure(result))
      yield* Console.log(`  document ${index} failed: ${result.failure._tag}: ${result.failure.message}`)
  }
}).pipe(Effect.scoped)

const Live = Layer.merge(NodeHttpClient.layer(), NodeBlocking.layer({ minWorkers: 2, maxWorkers: 2 }))

NodeRuntime.runMain(program.pipe(Effect.provide(Live)))
