// The JavaScript cost of a request in each form, with no network: every client sends to an
// in-process undici dispatcher that answers each request on the next event-loop turn (status 200,
// a 2-byte body; the JSON forms' `/todo`, a 21-byte object), so what is measured is the client's own work, without the socket writes and the
// origin's CPU that make req/s on this 2-core machine swing by ±15%.
//
//   cd bench && node --conditions=@volley/source --expose-gc http/overhead.ts [requests] [rounds]
//
// Prints the median over rounds of main-thread CPU µs per request, interleaved round by round.
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { Dispatcher } from "undici"
import { otel } from "../../packages/node/test/fixtures/otel.ts"
import { FloorHandler } from "./floor.ts"

const [requests = "50000", rounds = "7"] = process.argv.slice(2)
const total = Number(requests)
const CONCURRENCY = 64
const URL_ = "http://127.0.0.1:8080/2b"
const BODY = Buffer.from("ok")
const HEADERS = { "content-length": "2", "content-type": "text/plain" }
// The README's example reads `/todo`: one small JSON object.
const TODO_URL = "http://127.0.0.1:8080/todo"
const TODO = Buffer.from('{"id":1,"title":"ok"}')
const TODO_HEADERS = { "content-length": String(TODO.byteLength), "content-type": "application/json" }

// Answers on the next turn, as a keep-alive socket read would: start, head, body, end.
class Answering extends Dispatcher {
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    setImmediate(options.path === "/todo" ? answerTodo : answer, handler)
    return true
  }
  override close(): Promise<void> {
    return Promise.resolve()
  }
  override destroy(): Promise<void> {
    return Promise.resolve()
  }
}
const controller = {
  abort() {},
  pause() {},
  resume() {},
  paused: false,
  aborted: false,
  reason: null
} as unknown as Dispatcher.DispatchController
const answer = (handler: Dispatcher.DispatchHandler) => {
  handler.onRequestStart?.(controller, {})
  handler.onResponseStart?.(controller, 200, HEADERS, "OK")
  handler.onResponseData?.(controller, BODY)
  handler.onResponseEnd?.(controller, {})
}
const answerTodo = (handler: Dispatcher.DispatchHandler) => {
  handler.onRequestStart?.(controller, {})
  handler.onResponseStart?.(controller, 200, TODO_HEADERS, "OK")
  handler.onResponseData?.(controller, TODO)
  handler.onResponseEnd?.(controller, {})
}

// The floor: a bare handler object per request (./floor.ts), the next request sent when one ends.
const floor = (): Promise<void> =>
  new Promise((resolve) => {
    const dispatcher = new Answering()
    let started = 0
    let active = 0
    const next = () => {
      if (started < total) {
        started++
        active++
        dispatcher.dispatch({ origin: "http://127.0.0.1:8080", path: "/2b", method: "GET" }, new FloorHandler(done))
      } else if (active === 0) resolve()
    }
    const done = () => {
      active--
      next()
    }
    for (let i = 0; i < CONCURRENCY; i++) next()
  })

// Effect's floor: `Effect.forEach` at the same concurrency over an `Effect.callback` that
// dispatches a bare handler and resumes with its status. What any client built of Effects pays
// at least per request (a fiber, a suspension, a resume); the rest of a volley form is volley's.
const bareDispatcher = new Answering()
const bareRequest = Effect.callback<boolean>((resume) => {
  bareDispatcher.dispatch(
    { origin: "http://127.0.0.1:8080", path: "/2b", method: "GET" },
    new FloorHandler((ok) => resume(Effect.succeed(ok)))
  )
})

const client = NodeHttpClient.layerWith(() => new Answering()) as Layer.Layer<HttpClient.HttpClient>
const runtime = ManagedRuntime.make(client)
// The idiom under OpenTelemetry: a client span per request, exported in batches.
const exporter = new InMemorySpanExporter()
const traced = ManagedRuntime.make(Layer.merge(client, otel(exporter, true)))
const urls = Array.from({ length: total }, () => URL_)
const todoUrls = Array.from({ length: total }, () => TODO_URL)
const Todo = Schema.Struct({ id: Schema.Number, title: Schema.String })
const todoRead = Fanout.json(Todo)
const byteLength = (response: Parameters<typeof Http.readBytes>[0]) =>
  Effect.map(Http.readBytes(response), (bytes) => bytes.byteLength)

const forms: Record<string, () => Promise<unknown>> = {
  floor,
  "effect-floor": () => Effect.runPromise(Effect.forEach(urls, () => bareRequest, { concurrency: CONCURRENCY })),
  idiom: () =>
    runtime.runPromise(
      Effect.forEach(urls, (u) => Effect.map(Http.getText(u), (t) => t.length), { concurrency: CONCURRENCY })
    ),
  "idiom-untraced": () =>
    runtime.runPromise(
      Effect.forEach(urls, (u) => Effect.map(Http.getText(u), (t) => t.length), { concurrency: CONCURRENCY }).pipe(
        Effect.provideService(HttpClient.TracerDisabledWhen, () => true)
      )
    ),
  "idiom-otel": () =>
    traced
      .runPromise(
        Effect.forEach(urls, (u) => Effect.map(Http.getText(u), (t) => t.length), { concurrency: CONCURRENCY })
      )
      .finally(() => exporter.reset()),
  "idiom-json": () =>
    runtime.runPromise(
      Effect.forEach(todoUrls, (u) => Effect.map(Http.getJson(u, Todo), (todo) => todo.id), {
        concurrency: CONCURRENCY
      })
    ),
  allSettled: () => runtime.runPromise(Fanout.allSettled(urls, { concurrency: CONCURRENCY })),
  "allSettled-read": () => runtime.runPromise(Fanout.allSettled(urls, { concurrency: CONCURRENCY, read: byteLength })),
  "allSettled-json": () =>
    runtime.runPromise(Fanout.allSettled(todoUrls, { concurrency: CONCURRENCY, read: todoRead })),
  stream: () => runtime.runPromise(Stream.runCount(Fanout.stream(urls, { concurrency: CONCURRENCY })))
}

// ONLY=<form>: run that form alone (to profile it with --cpu-prof).
const only = process.env.ONLY
if (only !== undefined) for (const name of Object.keys(forms)) if (name !== only && name !== "floor") delete forms[name]

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const samples = new Map<string, Array<number>>()
for (const run of Object.values(forms)) await run() // warm-up
for (let round = 0; round < Number(rounds); round++) {
  for (const [name, run] of Object.entries(forms)) {
    globalThis.gc?.()
    const before = process.threadCpuUsage?.() ?? process.cpuUsage()
    await run()
    const after = process.threadCpuUsage?.(before) ?? process.cpuUsage(before)
    const us = (after.user + after.system) / total
    samples.set(name, [...(samples.get(name) ?? []), us])
  }
}
await runtime.dispose()
await traced.dispose()
const base = median(samples.get("floor")!)
const forms_ = [...samples].map(([name, xs]) => ({ name, medianUs: Math.round(median(xs) * 100) / 100 }))
// `bench http` runs this and reads its last line.
if (process.env.OVERHEAD_JSON !== undefined)
  console.log(JSON.stringify({ requests: total, rounds: Number(rounds), forms: forms_ }))
else {
  console.log(`${total} requests x ${rounds} rounds, main-thread CPU µs per request (median), no network`)
  for (const [name, xs] of samples) {
    const m = median(xs)
    console.log(
      `${name.padEnd(16)} ${m.toFixed(2).padStart(7)}  +${(m - base).toFixed(2)} over the floor   ${xs.map((x) => x.toFixed(1)).join(" ")}`
    )
  }
}
