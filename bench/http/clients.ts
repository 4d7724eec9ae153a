// One entry per client under test. Each builds its client once (so the warm-up and the timed
// run share pools and JIT state), then runs `total` GETs with at most `concurrency` in flight,
// reading every body in full, and stops early at `deadline` (epoch ms) so a stuck client can
// never hang the benchmark.
import { Agent as HttpAgent } from "node:http"
import * as PlatformHttpClient from "@effect/platform-node/NodeHttpClient"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Fanout, Http } from "@volley/core"
import { NodeHttpClient } from "@volley/node"
import axios from "axios"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import type * as HttpClientResponse from "effect/http/HttpClientResponse"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import got from "got"
import pLimit from "p-limit"
import { Pool } from "undici"
import { otel } from "../../packages/node/test/fixtures/otel.ts"
import { FloorHandler } from "./floor.ts"

export interface Counts {
  ok: number
  failed: number
}

export interface Client {
  readonly run: (url: string, total: number, concurrency: number, deadline: number) => Promise<Counts>
  readonly close: () => Promise<void>
}

// `concurrency` loops that each take the next request number until `total` or `deadline`.
const loops = async (total: number, concurrency: number, deadline: number, one: () => Promise<unknown>) => {
  const counts: Counts = { ok: 0, failed: 0 }
  let started = 0
  const loop = async () => {
    while (started < total && Date.now() < deadline) {
      started++
      try {
        await one()
        counts.ok++
      } catch {
        counts.failed++
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop))
  return counts
}

const undiciPool = async (origin: string): Promise<Client> => {
  const pool = new Pool(origin, { connections: 64 })
  return {
    run: (url, total, concurrency, deadline) => {
      const path = new URL(url).pathname
      return loops(total, concurrency, deadline, async () => {
        const { statusCode, body } = await pool.request({ method: "GET", path })
        await body.arrayBuffer()
        if (statusCode !== 200) throw new Error(`status ${statusCode}`)
      })
    },
    close: () => pool.close()
  }
}

// The floor: undici's Pool.dispatch with a bare handler object per request (./floor.ts),
// `concurrency` lanes each sending the next request when its response has ended. `keep`: every
// body is kept until the run ends, as a batch's results keep theirs (`Fanout.allSettled` returns
// every body): what holding that memory costs on this machine, beside the floor letting each go.
const undiciFloor =
  (keep: boolean) =>
  async (origin: string): Promise<Client> => {
    const pool = new Pool(origin, { connections: 64 })
    return {
      run: (url, total, concurrency, deadline) =>
        new Promise<Counts>((resolve) => {
          const path = new URL(url).pathname
          const counts: Counts = { ok: 0, failed: 0 }
          const kept: Array<Array<Buffer>> = []
          let started = 0
          let active = 0
          const done = (ok: boolean, chunks: Array<Buffer>) => {
            if (ok) counts.ok++
            else counts.failed++
            if (keep) kept.push(chunks)
            active--
            next()
          }
          const next = () => {
            if (started < total && Date.now() < deadline) {
              started++
              active++
              pool.dispatch({ method: "GET", path }, new FloorHandler(done))
            } else if (active === 0) resolve(counts)
          }
          for (let i = 0; i < concurrency; i++) next()
        }),
      close: () => pool.close()
    }
  }

// Effect's floor: the floor's requests, each an `Effect.callback` around the bare handler, run
// by `Effect.forEach` at the same concurrency (a fiber per request, as the idiom's). The least
// any client whose requests are Effects pays; the distance from it to a volley row is volley's.
const effectFloor = async (origin: string): Promise<Client> => {
  const pool = new Pool(origin, { connections: 64 })
  return {
    run: async (url, total, concurrency, deadline) => {
      const path = new URL(url).pathname
      const counts: Counts = { ok: 0, failed: 0 }
      const one = Effect.callback<boolean>((resume) => {
        pool.dispatch({ method: "GET", path }, new FloorHandler((ok) => resume(Effect.succeed(ok))))
      })
      const counted = Effect.suspend(() => (Date.now() < deadline ? one : Effect.succeed(false))).pipe(
        Effect.map((ok) => (ok ? counts.ok++ : counts.failed++))
      )
      await Effect.runPromise(
        Effect.forEach(Array.from({ length: total }), () => counted, { concurrency, discard: true })
      )
      return counts
    },
    close: () => pool.close()
  }
}

const fetchPLimit = async (): Promise<Client> => ({
  run: async (url, total, concurrency, deadline) => {
    const limit = pLimit(concurrency)
    const counts: Counts = { ok: 0, failed: 0 }
    await Promise.all(
      Array.from({ length: total }, () =>
        limit(async () => {
          if (Date.now() >= deadline) return
          try {
            const response = await fetch(url)
            await response.arrayBuffer()
            if (response.status !== 200) throw new Error(`status ${response.status}`)
            counts.ok++
          } catch {
            counts.failed++
          }
        })
      )
    )
    return counts
  },
  close: async () => {}
})

const gotClient = async (): Promise<Client> => {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 })
  const client = got.extend({ agent: { http: agent }, retry: { limit: 0 } })
  return {
    run: (url, total, concurrency, deadline) =>
      loops(total, concurrency, deadline, () => client.get(url, { responseType: "buffer" })),
    close: async () => agent.destroy()
  }
}

const axiosClient = async (): Promise<Client> => {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 64 })
  const client = axios.create({ httpAgent: agent, responseType: "arraybuffer" })
  return {
    run: (url, total, concurrency, deadline) => loops(total, concurrency, deadline, () => client.get(url)),
    close: async () => agent.destroy()
  }
}

// Effect clients: `concurrency` fibers through Effect.forEach, each reading the body in full.
const effectClient = async (layer: Layer.Layer<HttpClient.HttpClient, unknown>, tracing: boolean): Promise<Client> => {
  const runtime = ManagedRuntime.make(layer)
  const client = await runtime.runPromise(HttpClient.HttpClient)
  const one = (url: string, counts: Counts) =>
    client.get(url).pipe(
      Effect.flatMap((response) =>
        response.status === 200 ? response.arrayBuffer : Effect.fail(new Error(`status ${response.status}`))
      ),
      Effect.matchCause({
        onFailure: () => {
          counts.failed++
        },
        onSuccess: () => {
          counts.ok++
        }
      })
    )
  return {
    run: (url, total, concurrency, deadline) => {
      const counts: Counts = { ok: 0, failed: 0 }
      const program = Effect.forEach(
        Array.from({ length: total }, (_, i) => i),
        () => Effect.suspend(() => (Date.now() < deadline ? one(url, counts) : Effect.void)),
        { concurrency, discard: true }
      )
      return runtime
        .runPromise(tracing ? program : program.pipe(Effect.provideService(HttpClient.TracerDisabledWhen, () => true)))
        .then(() => counts)
    },
    close: () => runtime.dispose()
  }
}

// The card's idiom: `Effect.forEach` over `Http.getText` with bounded concurrency, on
// `NodeHttpClient.layer()`. `tracing`: "default" (no tracer configured), "off"
// (`HttpClient.TracerDisabledWhen`), or "otel" (OpenTelemetry through @effect/opentelemetry,
// every span recorded by a batch processor into the SDK's in-memory exporter).
const idiomClient = (tracing: "default" | "off" | "otel") => async (): Promise<Client> => {
  const exporter = new InMemorySpanExporter()
  const tracer = tracing === "otel" ? otel(exporter, true) : Layer.empty
  const runtime = ManagedRuntime.make(Layer.mergeAll(NodeHttpClient.layer(), tracer))
  return {
    run: async (url, total, concurrency, deadline) => {
      const limit = Duration.millis(Math.max(0, deadline - Date.now()))
      const urls = Array.from({ length: total }, () => url)
      // Each body read in full as text, keeping only its length as the other clients do (a
      // program that keeps 20,000 bodies of 16 KiB measures its heap, not its HTTP client).
      const program = Effect.forEach(urls, (u) => Effect.map(Http.getText(u), (text) => text.length), {
        concurrency
      }).pipe(Effect.timeout(limit))
      const exit = await runtime.runPromiseExit(
        tracing === "off" ? program.pipe(Effect.provideService(HttpClient.TracerDisabledWhen, () => true)) : program
      )
      exporter.reset()
      return exit._tag === "Success" ? { ok: exit.value.length, failed: 0 } : { ok: 0, failed: total }
    },
    close: () => runtime.dispose()
  }
}

// The README's first example: `Effect.forEach` over `Http.getJson` with a schema, against the
// origin's `/todo` (one small JSON object), keeping only each value's `id`.
const Todo = Schema.Struct({ id: Schema.Number, title: Schema.String })
const idiomJson = async (): Promise<Client> => {
  const runtime = ManagedRuntime.make(NodeHttpClient.layer())
  return {
    run: async (url, total, concurrency, deadline) => {
      const limit = Duration.millis(Math.max(0, deadline - Date.now()))
      const urls = Array.from({ length: total }, () => url)
      const program = Effect.forEach(urls, (u) => Effect.map(Http.getJson(u, Todo), (todo) => todo.id), {
        concurrency
      }).pipe(Effect.timeout(limit))
      const exit = await runtime.runPromiseExit(program)
      return exit._tag === "Success" ? { ok: exit.value.length, failed: 0 } : { ok: 0, failed: total }
    },
    close: () => runtime.dispose()
  }
}

// The same as a batch: `Fanout.allSettled` with `Fanout.json` as its read.
const fanoutJson = async (): Promise<Client> => {
  const runtime = ManagedRuntime.make(NodeHttpClient.layer())
  const read = Fanout.json(Todo)
  return {
    run: async (url, total, concurrency, deadline) => {
      const limit = Duration.millis(Math.max(0, deadline - Date.now()))
      const urls = Array.from({ length: total }, () => url)
      const results = await runtime.runPromise(Effect.timeout(Fanout.allSettled(urls, { concurrency, read }), limit))
      let ok = 0
      for (const result of results) if (Result.isSuccess(result)) ok++
      return { ok, failed: results.length - ok }
    },
    close: () => runtime.dispose()
  }
}

// A read of the caller's own: the body in full as bytes (as the default read gets it), keeping
// only its size.
const byteLength = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(Http.readBytes(response), (bytes) => bytes.byteLength)

// volley's batch API: one Fanout.allSettled over all the URLs, as a user writes it (the default
// read: every body kept as bytes in the result array), with a deadline, or with a read of its own.
// The time bound is otherwise a timeout around the whole batch (Fanout's own `deadline` would
// also time each attempt).
const fanoutClient = (form: "default" | "deadline" | "read") => async (): Promise<Client> => {
  const runtime = ManagedRuntime.make(NodeHttpClient.layer())
  return {
    run: async (url, total, concurrency, deadline) => {
      const limit = Duration.millis(Math.max(0, deadline - Date.now()))
      const urls = Array.from({ length: total }, () => url)
      // Each form's results, as an array of `Result`s: only their count of successes is used.
      const batch: Effect.Effect<
        ReadonlyArray<Result.Result<unknown, unknown>>,
        unknown,
        HttpClient.HttpClient
      > = form === "deadline"
        ? Fanout.allSettled(urls, { concurrency, deadline: limit })
        : Effect.timeout(
            form === "read"
              ? Fanout.allSettled(urls, { concurrency, read: byteLength })
              : Fanout.allSettled(urls, { concurrency }),
            limit
          )
      const results = await runtime.runPromise(batch)
      let ok = 0
      for (const result of results) if (Result.isSuccess(result)) ok++
      return { ok, failed: results.length - ok }
    },
    close: () => runtime.dispose()
  }
}

// volley's streaming batch API: Fanout.stream over all the URLs (the default read), counted as
// they arrive.
const fanoutStream = async (): Promise<Client> => {
  const runtime = ManagedRuntime.make(NodeHttpClient.layer())
  return {
    run: async (url, total, concurrency, deadline) => {
      const limit = Duration.millis(Math.max(0, deadline - Date.now()))
      const count = Fanout.stream(
        Array.from({ length: total }, () => url),
        { concurrency }
      ).pipe(Stream.runCount, Effect.timeout(limit))
      const exit = await runtime.runPromiseExit(count)
      return exit._tag === "Success" ? { ok: exit.value, failed: total - exit.value } : { ok: 0, failed: total }
    },
    close: () => runtime.dispose()
  }
}

/** Clients by name, in the order of the report. */
export const clients: Record<string, { readonly label: string; readonly make: (origin: string) => Promise<Client> }> = {
  floor: { label: "undici Pool.dispatch, bare handler (the floor)", make: undiciFloor(false) },
  "floor-keep": {
    label: "undici Pool.dispatch, bare handler, keeping every body to the end (as a batch's results do)",
    make: undiciFloor(true)
  },
  "effect-floor": { label: "Effect floor: Effect.forEach over Effect.callback + bare handler", make: effectFloor },
  idiom: { label: "volley Effect.forEach + Http.getText (defaults)", make: idiomClient("default") },
  "idiom-untraced": { label: "volley Effect.forEach + Http.getText, tracing off", make: idiomClient("off") },
  "idiom-otel": { label: "volley Effect.forEach + Http.getText, OpenTelemetry", make: idiomClient("otel") },
  volley: { label: "volley Fanout.allSettled (batch API)", make: fanoutClient("default") },
  "volley-read": { label: "volley Fanout.allSettled with a read of its own", make: fanoutClient("read") },
  "volley-deadline": { label: "volley Fanout.allSettled with a deadline", make: fanoutClient("deadline") },
  "volley-stream": { label: "volley Fanout.stream", make: fanoutStream },
  "idiom-json": { label: "volley Effect.forEach + Http.getJson (the README's example)", make: idiomJson },
  "volley-json": { label: "volley Fanout.allSettled with Fanout.json", make: fanoutJson },
  undici: { label: "undici Pool.request", make: undiciPool },
  effect: {
    label: "Effect HttpClient (platform-node layerUndici)",
    make: () => effectClient(PlatformHttpClient.layerUndici, true)
  },
  "effect-notrace": {
    label: "Effect HttpClient, tracing off",
    make: () => effectClient(PlatformHttpClient.layerUndici, false)
  },
  fetch: { label: "fetch + p-limit", make: fetchPLimit },
  got: { label: "got", make: gotClient },
  axios: { label: "axios", make: axiosClient }
}
