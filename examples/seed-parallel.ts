// The article's program, in Effect: the same GETs one after another, then in parallel
// with bounded concurrency, printing each response's status and size and the wall time.
//
//   pnpm example examples/seed-parallel.ts                      # against an embedded local server
//   pnpm example examples/seed-parallel.ts https://example.com  # URLs on the command line replace it
import { NodeRuntime } from "@effect/platform-node"
import { NodeHttpClient } from "@volley/node"
import { Console, Effect } from "effect"
import { HttpClient } from "effect/http"
import { localServer } from "./support/localServer.ts"

const fetchOne = (url: string) =>
  Effect.gen(function* () {
    const response = yield* HttpClient.get(url)
    const body = yield* response.arrayBuffer
    yield* Console.log(`  ${response.status}  ${String(body.byteLength).padStart(7)} bytes  ${url}`)
  }).pipe(Effect.catch((error) => Console.log(`  ERR  ${error.message}`)))

const timed = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    yield* Console.log(`${label}:`)
    const start = performance.now()
    yield* effect
    const ms = performance.now() - start
    yield* Console.log(`  -> ${ms.toFixed(0)} ms\n`)
    return ms
  })

const program = Effect.gen(function* () {
  const given = process.argv.slice(2)
  const urls = given.length > 0 ? given : (yield* localServer(100)).urls(8)
  const sequential = yield* timed("one after another", Effect.forEach(urls, fetchOne, { discard: true }))
  const parallel = yield* timed("in parallel (concurrency 8)", Effect.all(urls.map(fetchOne), { concurrency: 8 }))
  yield* Console.log(`speed-up: ${(sequential / parallel).toFixed(1)}x`)
}).pipe(Effect.scoped, Effect.provide(NodeHttpClient.layer()))

NodeRuntime.runMain(program)
