// Blocking calls lifted onto worker threads: scrypt, gzip of 16 MiB, and the article's pattern, a
// synchronous HTTP client (curl through execFileSync) against our own embedded server. The same
// program runs twice, once with Blocking.layerInline and once with NodeBlocking.layer, and prints
// the main thread's event-loop delay (p99) for each: inline, every call freezes the loop, so even
// our own server cannot answer curl; on the executor the loop stays free. The tasks live in
// examples/tasks/blocking.ts: pool threads import a task's module, never this entry module.
//
// Needs curl on PATH (`apt-get install curl`); the example checks for it before it starts.
//
//   pnpm example examples/blocking-executor.ts

import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Blocking } from "@volley/core"
import { NodeBlocking } from "@volley/node"
import { Effect, type Layer } from "effect"
import { curl, gzip, hash } from "./tasks/blocking.ts"

// curl is the synchronous client under test: without it every curl call fails, and the output
// would blame a blocked event loop on both rows.
try {
  execFileSync("curl", ["--version"], { stdio: "ignore" })
} catch (error) {
  const { code, message } = error as NodeJS.ErrnoException
  const reason = code === "ENOENT" ? "not found on PATH" : message.split("\n")[0]
  console.error(`blocking-executor needs curl (${reason}): install it with \`apt-get install curl\``)
  process.exit(1)
}

const workload = (url: string, bytes: Uint8Array) =>
  Effect.all(
    {
      hash: Blocking.run(hash, "correct horse battery staple"),
      gzip: Blocking.run(gzip, bytes),
      http: Blocking.run(curl, url).pipe(
        Effect.map((body) => body.trim()),
        // Inline, curl blocks the very event loop our server answers on: it gives up after 2 s.
        Effect.catchTag("HandlerError", () => Effect.succeed("no answer in 2 s (the server's event loop was blocked)"))
      )
    },
    { concurrency: "unbounded" }
  )

const measure = (label: string, url: string, layer: Layer.Layer<Blocking.BlockingExecutor, unknown>) =>
  Effect.gen(function* () {
    const bytes = compressible(16 * 1024 * 1024)
    yield* Blocking.run(hash, "warm-up") // threads started and task module loaded before we measure
    const delay = monitorEventLoopDelay({ resolution: 1 })
    delay.enable()
    yield* tick
    const start = performance.now()
    const result = yield* workload(url, bytes)
    const wall = performance.now() - start
    yield* tick // the monitor records a blocked loop when its timer fires next
    delay.disable()
    const ms = (nanos: number) => `${(nanos / 1e6).toFixed(1).padStart(7)} ms`
    console.log(
      `${label.padEnd(9)} loop delay p99 ${ms(delay.percentile(99))}, max ${ms(delay.max)}, wall ${wall.toFixed(0)} ms`
    )
    console.log(`          scrypt ${result.hash.slice(0, 16)}…, gzip → ${result.gzip} bytes, curl → ${result.http}`)
  }).pipe(Effect.provide(layer as Layer.Layer<Blocking.BlockingExecutor>))

const tick = Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))

const compressible = (size: number) => {
  const bytes = new Uint8Array(size)
  const noise = randomBytes(4096)
  for (let i = 0; i < size; i++) bytes[i] = i % 16 === 0 ? noise[i % 4096]! : 65 + (i % 26)
  return bytes
}

const withServer = Effect.acquireRelease(
  Effect.callback<ReturnType<typeof createServer>>((resume) => {
    const server = createServer((_, res) => res.end("hello from the embedded server"))
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.sync(() => server.close())
)

await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const server = yield* withServer
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
      yield* measure("inline", url, Blocking.layerInline)
      yield* measure("executor", url, NodeBlocking.layer({ maxWorkers: 3, minWorkers: 3 }))
    })
  )
)
