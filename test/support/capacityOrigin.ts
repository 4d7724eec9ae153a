// An origin with a capacity, for adaptive concurrency: node:http on 127.0.0.1 (port 0) that
// serves at most `capacity` requests at once, each in `latency` ms; queues the next `queue`
// (first in, first out, so a queued request's latency grows with the queue ahead of it); and
// answers 503 at once past `capacity + queue` (with `Retry-After` when `retryAfter` is set).
// The capacity can change while it runs; it counts requests, 503s and the peaks of requests
// in flight (served + queued) and served at once.
//
// `capacityOrigin` runs in the test's own process; `remoteCapacityOrigin` runs the same server
// in a child process, so its timers and sockets do not share the event loop (or the latencies
// measured) with the client under test. Both are driven the same way, with Effects.
import { type ChildProcess, fork } from "node:child_process"
import { createServer, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

export interface CapacityOptions {
  /** Requests served at once. */
  readonly capacity: number
  /** Requests queued beyond those; past `capacity + queue` the answer is 503. */
  readonly queue: number
  /** Time to serve one request, in ms. */
  readonly latency: number
  /** `Retry-After` (seconds) on each 503. */
  readonly retryAfter?: number | undefined
}

export interface CapacityStats {
  readonly requests: number
  /** Answered 200. */
  readonly served: number
  /** Answered 503. */
  readonly rejected: number
  readonly capacity: number
  /** Requests served or queued now. */
  readonly inFlight: number
  /** Most requests served or queued at once (since the start or the last `resetPeaks`). */
  readonly peakInFlight: number
  /** Most requests served at once: never above the capacity at the time. */
  readonly peakServing: number
}

export interface CapacityOrigin {
  readonly url: string
  readonly setCapacity: (capacity: number) => Effect.Effect<void>
  readonly stats: Effect.Effect<CapacityStats>
  readonly resetPeaks: Effect.Effect<void>
}

/** The server in this process, for the enclosing scope. */
export const capacityOrigin = (options: CapacityOptions) =>
  Effect.acquireRelease(
    Effect.promise(() => listen(options)),
    (server) => Effect.promise(server.close)
  ).pipe(
    Effect.map(
      (server): CapacityOrigin => ({
        url: server.url,
        setCapacity: (capacity) => Effect.sync(() => server.setCapacity(capacity)),
        stats: Effect.sync(server.stats),
        resetPeaks: Effect.sync(server.resetPeaks)
      })
    )
  )

/** The server in a child process, for the enclosing scope. */
export const remoteCapacityOrigin = (options: CapacityOptions) =>
  Effect.acquireRelease(
    Effect.promise(() => spawn(options)),
    ({ child }) =>
      Effect.promise(
        () =>
          new Promise<void>((done) => {
            if (child.exitCode !== null) return done()
            child.once("exit", () => done())
            child.kill()
          })
      )
  ).pipe(Effect.map(({ origin }) => origin))

interface Listening {
  readonly url: string
  readonly setCapacity: (capacity: number) => void
  readonly stats: () => CapacityStats
  readonly resetPeaks: () => void
  readonly close: () => Promise<void>
}

const listen = (options: CapacityOptions) =>
  new Promise<Listening>((resolve) => {
    let capacity = options.capacity
    let requests = 0
    let served = 0
    let rejected = 0
    let serving = 0
    let peakServing = 0
    let peakInFlight = 0
    const waiting: Array<ServerResponse> = []
    const sockets = new Set<Socket>()
    const timers = new Set<NodeJS.Timeout>()
    const body = Buffer.from("ok")

    const serve = (res: ServerResponse) => {
      serving++
      if (serving > peakServing) peakServing = serving
      let done = false
      const free = () => {
        if (done) return
        done = true
        serving--
        while (serving < capacity && waiting.length > 0) serve(waiting.shift()!)
      }
      const timer = setTimeout(() => {
        timers.delete(timer)
        served++
        res.writeHead(200, { "content-type": "text/plain", "content-length": body.length }).end(body)
        free()
      }, options.latency)
      timers.add(timer)
      // A client that gives up frees its slot (as a server whose work is cancelled would).
      res.on("close", () => {
        if (done) return
        clearTimeout(timer)
        timers.delete(timer)
        free()
      })
    }

    const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, (req, res) => {
      requests++
      req.resume()
      if (serving < capacity) serve(res)
      else if (waiting.length < options.queue) {
        waiting.push(res)
        res.on("close", () => {
          const i = waiting.indexOf(res)
          if (i >= 0) waiting.splice(i, 1)
        })
      } else {
        rejected++
        const headers: Record<string, string> = { "content-type": "text/plain", "content-length": "4" }
        if (options.retryAfter !== undefined) headers["retry-after"] = String(options.retryAfter)
        res.writeHead(503, headers).end("busy")
        return
      }
      const inFlight = serving + waiting.length
      if (inFlight > peakInFlight) peakInFlight = inFlight
    })
    server.maxRequestsPerSocket = 0
    server.on("connection", (socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}`,
        setCapacity: (next) => {
          capacity = next
          while (serving < capacity && waiting.length > 0) serve(waiting.shift()!)
        },
        stats: () => ({
          requests,
          served,
          rejected,
          capacity,
          inFlight: serving + waiting.length,
          peakInFlight,
          peakServing
        }),
        resetPeaks: () => {
          peakInFlight = serving + waiting.length
          peakServing = serving
        },
        close: () =>
          new Promise<void>((done) => {
            for (const t of timers) clearTimeout(t)
            for (const socket of sockets) socket.destroy()
            server.close(() => done())
          })
      })
    })
  })

type Op =
  | { readonly op: "stats" }
  | { readonly op: "resetPeaks" }
  | { readonly op: "setCapacity"; readonly capacity: number }
type Command = Op & { readonly id: number }

const spawn = (options: CapacityOptions) =>
  new Promise<{ child: ChildProcess; origin: CapacityOrigin }>((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ["--serve", JSON.stringify(options)], {
      execArgv: ["--conditions=@volley/source"],
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    let next = 0
    const pending = new Map<number, (reply: unknown) => void>()
    const call = <A>(command: Op) =>
      Effect.promise(
        () =>
          new Promise<A>((done) => {
            const id = next++
            pending.set(id, done as (reply: unknown) => void)
            child.send({ ...command, id })
          })
      )
    child.on("error", reject)
    child.on("message", (message: { url?: string; id?: number; reply?: unknown }) => {
      if (message.url !== undefined) {
        resolve({
          child,
          origin: {
            url: message.url,
            setCapacity: (capacity) => call<void>({ op: "setCapacity", capacity }),
            stats: call<CapacityStats>({ op: "stats" }),
            resetPeaks: call<void>({ op: "resetPeaks" })
          }
        })
      } else if (message.id !== undefined) {
        pending.get(message.id)?.(message.reply)
        pending.delete(message.id)
      }
    })
  })

if (process.argv[2] === "--serve" && process.send !== undefined) {
  const server = await listen(JSON.parse(process.argv[3]!) as CapacityOptions)
  process.on("message", (command: Command) => {
    const reply =
      command.op === "stats"
        ? server.stats()
        : command.op === "resetPeaks"
          ? server.resetPeaks()
          : server.setCapacity(command.capacity)
    process.send?.({ id: command.id, reply })
  })
  process.on("disconnect", () => process.exit(0))
  process.send({ url: server.url })
}
