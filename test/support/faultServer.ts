// A node:http origin on 127.0.0.1 (port 0) that misbehaves on request, for fan-out tests.
// Every fault is chosen by the path, tuned by query parameters, so one server serves a test:
//
//   /ok?delay=ms&size=bytes      200 after `delay` ms (headers delayed), `size` bytes of "x"
//   /flaky?key=k&fail=n&status=s&retryAfter=v&size=b   the first n requests per key answer `s`
//                                (default 503) with `Retry-After: v` when given and a body of b
//                                bytes ("busy" by default), then 200 "ok"
//   /status?code=s&retryAfter=v&size=n  always `s`, with a body of n bytes
//   /reset                       destroys the socket without answering (ECONNRESET)
//   /flaky-reset?key=k&fail=n    resets the first n requests per key, then 200 "ok"
//   /slow-body?chunks=n&interval=ms  200, n chunks of "x" spaced by `interval` ms
//   /truncated                   announces 100 bytes, sends 10, destroys the socket
//   /together?key=k&n=c&code=s   held until c requests of key `k` arrived, then all answered
//                                at once (in arrival order), each with its own `code` (default 200)
//   /hang                        never answers
//   /index?i=n                   200 with body n (to check order)
//   /json-gz?i=n&items=k         200, a gzipped JSON document {i, items: [k objects]}
//
// Counters: requests (total and per path), open sockets now, requests in flight now and at peak.
import { type ChildProcess, fork } from "node:child_process"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { fileURLToPath } from "node:url"
import { gzipSync } from "node:zlib"
import { Effect } from "effect"

export interface FaultServer {
  readonly url: string
  readonly requests: (path?: string) => number
  readonly openSockets: () => number
  readonly inFlight: () => number
  readonly peakInFlight: () => number
  /** Resolves once the server has received `n` requests in total (real time, not TestClock). */
  readonly receivedRequests: (n: number) => Promise<void>
  /** Resolves once no request is in flight (answered, or its socket closed). */
  readonly noneInFlight: () => Promise<void>
  /** Resolves once at most `n` sockets are open. */
  readonly socketsAtMost: (n: number) => Promise<void>
  /** Resolves once no socket is open. */
  readonly allSocketsClosed: () => Promise<void>
}

export const faultServer = Effect.acquireRelease(
  Effect.promise(() => listen()),
  ({ close }) => Effect.promise(close)
).pipe(Effect.map(({ server }) => server))

const listen = () =>
  new Promise<{ server: FaultServer; close: () => Promise<void> }>((resolve) => {
    let total = 0
    let inFlight = 0
    let peak = 0
    const perPath = new Map<string, number>()
    const perKey = new Map<string, number>()
    const sockets = new Set<Socket>()
    const timers = new Set<NodeJS.Timeout>()
    let waiters: Array<() => void> = []
    const notify = () => {
      const ws = waiters
      waiters = []
      for (const w of ws) w()
    }
    // Requests held by `/together`, per key, until their number is reached.
    const held = new Map<string, Array<() => void>>()
    const later = (ms: number, f: () => void) => {
      const t = setTimeout(() => {
        timers.delete(t)
        f()
      }, ms)
      timers.add(t)
    }
    const handle = (req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? "/", "http://x")
      const q = (name: string, fallback: number) => Number(url.searchParams.get(name) ?? fallback)
      const nth = () => {
        const key = `${url.pathname}:${url.searchParams.get("key") ?? ""}`
        const n = (perKey.get(key) ?? 0) + 1
        perKey.set(key, n)
        return n
      }
      switch (url.pathname) {
        case "/ok":
          return later(q("delay", 0), () => res.end("x".repeat(q("size", 2))))
        case "/index":
          return res.end(String(url.searchParams.get("i")))
        case "/json-gz": {
          const i = q("i", 0)
          const doc = { i, items: Array.from({ length: q("items", 100) }, (_, n) => ({ n, name: `item-${i}-${n}` })) }
          return res.writeHead(200, { "content-type": "application/gzip" }).end(gzipSync(JSON.stringify(doc)))
        }
        case "/flaky": {
          if (nth() > q("fail", 1)) return res.end("ok")
          const retryAfter = url.searchParams.get("retryAfter")
          const headers = retryAfter === null ? {} : { "retry-after": retryAfter }
          return res
            .writeHead(q("status", 503), headers)
            .end(url.searchParams.has("size") ? "b".repeat(q("size", 4)) : "busy")
        }
        case "/status": {
          const retryAfter = url.searchParams.get("retryAfter")
          const headers = retryAfter === null ? {} : { "retry-after": retryAfter }
          return res.writeHead(q("code", 500), headers).end("s".repeat(q("size", 6)))
        }
        case "/reset":
          return req.socket.destroy()
        case "/flaky-reset":
          return nth() > q("fail", 1) ? res.end("ok") : req.socket.destroy()
        case "/slow-body": {
          const chunks = q("chunks", 5)
          res.writeHead(200) // chunked: clients hand the response over before the body ends
          const send = (i: number) => {
            if (i === chunks) return res.end()
            res.write("x")
            later(q("interval", 50), () => send(i + 1))
          }
          return send(0)
        }
        case "/truncated":
          res.writeHead(200, { "content-length": "100" })
          res.write("x".repeat(10))
          return later(5, () => req.socket.destroy())
        case "/together": {
          const key = url.searchParams.get("key") ?? ""
          const answers = held.get(key) ?? []
          answers.push(() => res.writeHead(q("code", 200), { "content-length": "1" }).end("t"))
          held.set(key, answers)
          if (answers.length < q("n", 2)) return
          held.delete(key)
          for (const answer of answers) answer()
          return
        }
        case "/hang":
          return
        default:
          return res.writeHead(404).end("not found")
      }
    }
    const server = createServer((req, res) => {
      total++
      const path = new URL(req.url ?? "/", "http://x").pathname
      perPath.set(path, (perPath.get(path) ?? 0) + 1)
      inFlight++
      peak = Math.max(peak, inFlight)
      res.on("close", () => {
        inFlight--
        notify()
      })
      notify()
      handle(req, res)
    })
    server.keepAliveTimeout = 10_000
    server.on("connection", (socket) => {
      sockets.add(socket)
      socket.on("close", () => {
        sockets.delete(socket)
        notify()
      })
    })
    const until = (done: () => boolean) =>
      new Promise<void>((resolve) => {
        const check = () => (done() ? resolve() : waiters.push(check))
        check()
      })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resolve({
        server: {
          url: `http://127.0.0.1:${port}`,
          requests: (path) => (path === undefined ? total : (perPath.get(path) ?? 0)),
          openSockets: () => sockets.size,
          inFlight: () => inFlight,
          peakInFlight: () => peak,
          receivedRequests: (n) => until(() => total >= n),
          noneInFlight: () => until(() => inFlight === 0),
          socketsAtMost: (n) => until(() => sockets.size <= n),
          allSocketsClosed: () => until(() => sockets.size === 0)
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

/**
 * The same server in a child process, for load tests: its socket work does not share the event
 * loop (or the time measured) with the client under test. Counters are read over IPC.
 */
export interface RemoteFaultServer {
  readonly url: string
  readonly stats: () => Promise<{ readonly requests: number; readonly openSockets: number; readonly inFlight: number }>
  /** Resolves once `check` holds for the server's counters (polled every 10 ms, real time). */
  readonly until: (check: (stats: Awaited<ReturnType<RemoteFaultServer["stats"]>>) => boolean) => Promise<void>
}

export const remoteFaultServer = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<{ child: ChildProcess; server: RemoteFaultServer }>((resolve, reject) => {
        const child = fork(fileURLToPath(import.meta.url), ["--serve"], {
          execArgv: ["--conditions=@volley/source"],
          stdio: ["ignore", "inherit", "inherit", "ipc"]
        })
        let next = 0
        const pending = new Map<number, (stats: never) => void>()
        child.on("error", reject)
        child.on("message", (message: { url?: string; id?: number; stats?: never }) => {
          if (message.url !== undefined) {
            const stats = () =>
              new Promise<never>((done) => {
                const id = next++
                pending.set(id, done)
                child.send({ id })
              })
            const until: RemoteFaultServer["until"] = async (check) => {
              while (!check(await stats())) await new Promise((r) => setTimeout(r, 10))
            }
            resolve({ child, server: { url: message.url, stats, until } })
          } else if (message.id !== undefined) {
            pending.get(message.id)?.(message.stats as never)
            pending.delete(message.id)
          }
        })
      })
  ),
  ({ child }) =>
    Effect.promise(
      () =>
        new Promise<void>((done) => {
          child.once("exit", () => done())
          child.kill()
        })
    )
).pipe(Effect.map(({ server }) => server))

if (process.argv[2] === "--serve" && process.send !== undefined) {
  const { server } = await listen()
  process.on("message", (message: { id: number }) => {
    process.send?.({
      id: message.id,
      stats: { requests: server.requests(), openSockets: server.openSockets(), inFlight: server.inFlight() }
    })
  })
  process.on("disconnect", () => process.exit(0))
  process.send({ url: server.url })
}
