// Every program in examples/ runs as written: each one is started as a child process (as
// `pnpm example` does) and must exit 0 and print its key lines. They all start in `beforeAll`,
// four at a time, the slowest first (the demo's 200 sequential GETs take 10 s by design).
// The README's smallest example is checked twice: examples/smallest.ts must be the README's
// code, and it must print the three todos of examples/todos-server.ts.
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { inspect } from "node:util"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { bar, progressLine } from "../examples/support/progressLine.ts"
import { handler } from "../examples/todos-server.ts"

const root = new URL("..", import.meta.url).pathname
const examples = join(root, "examples")

interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  readonly timedOut: boolean
  readonly timeoutMs: number
}

// Generous: on a loaded 2-core machine the demo alone has taken 40 s. A program still running
// then is stopped (SIGTERM, so the proxy example stops its proxies), and its test fails with what
// it printed so far.
const TIMEOUT_MS = 90_000

const children = new Set<ChildProcess>()
const timedOut = new WeakSet<ChildProcess>()

const start = (file: string, env: NodeJS.ProcessEnv, timeoutMs: number): ChildProcess => {
  const child = spawn(process.execPath, ["--conditions=@volley/source", file], {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe"]
  })
  children.add(child)
  const timer = setTimeout(() => {
    timedOut.add(child)
    child.kill("SIGTERM")
  }, timeoutMs)
  child.on("close", () => {
    clearTimeout(timer)
    children.delete(child)
  })
  return child
}

const run = (file: string, env: NodeJS.ProcessEnv = process.env, timeoutMs = TIMEOUT_MS): Promise<Finished> =>
  new Promise((resolve, reject) => {
    const child = start(file, env, timeoutMs)
    let stdout = ""
    let stderr = ""
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code, signal) =>
      resolve({ code, signal, stdout, stderr, timedOut: timedOut.has(child), timeoutMs })
    )
  })

const succeeded = (finished: Finished): ReadonlyArray<string> => {
  const exit = finished.timedOut
    ? `stopped after ${finished.timeoutMs / 1000} s`
    : `exit ${finished.code} (${finished.signal})`
  const why = `${exit}\n--- stdout\n${finished.stdout}\n--- stderr\n${finished.stderr}`
  assert.strictEqual(finished.code, 0, why)
  return finished.stdout.split("\n")
}

// A user's environment may point the proxy example at proxies of its own.
const { EXAMPLE_HTTP_PROXY: _http, EXAMPLE_SOCKS_PROXY: _socks, ...withoutExampleProxies } = process.env

// The README's smallest example, served by the todos handler on a port the kernel picks: the
// example hard-codes 8080, so it runs from a copy with the port substituted, next to the original.
const smallestAgainstTodos = async () => {
  const requests: Array<string> = []
  const server = await new Promise<Server>((resolve) => {
    const server = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`)
      handler(req, res)
    })
    server.listen(0, "127.0.0.1", () => resolve(server))
  })
  const copy = join(examples, `smallest.${process.pid}.tmp.ts`)
  try {
    const source = readFileSync(join(examples, "smallest.ts"), "utf8")
    const port = (server.address() as AddressInfo).port
    const rewritten = source.replaceAll("http://127.0.0.1:8080/", `http://127.0.0.1:${port}/`)
    assert.strictEqual(rewritten.split(`127.0.0.1:${port}/`).length, 2, "smallest.ts names http://127.0.0.1:8080/ once")
    writeFileSync(copy, rewritten)
    return { finished: await run(copy), requests: requests.sort() }
  } finally {
    rmSync(copy, { force: true })
    await new Promise((resolve) => server.close(resolve))
  }
}

// Runs examples/todos-server.ts on PORT=0 and asks the port it printed for two paths.
const todosServer = () =>
  new Promise<{ line: string; todo: unknown; missing: number }>((resolve, reject) => {
    const child = start(join(examples, "todos-server.ts"), { ...process.env, PORT: "0" }, TIMEOUT_MS)
    let stdout = ""
    let stderr = ""
    child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    child.on("error", reject)
    child.on("close", (code) =>
      reject(new Error(`todos-server exited (${code}) before it answered:\n${stdout}${stderr}`))
    )
    let asked = false
    child.stdout?.setEncoding("utf8").on("data", async (chunk: string) => {
      stdout += chunk
      const port = /on http:\/\/127\.0\.0\.1:(\d+)\//.exec(stdout)?.[1]
      if (asked || port === undefined || !stdout.includes("\n")) return
      asked = true
      try {
        const todo = await (await fetch(`http://127.0.0.1:${port}/todos/2`)).json()
        const missing = (await fetch(`http://127.0.0.1:${port}/users/2`)).status
        resolve({ line: stdout.trimEnd(), todo, missing })
      } catch (error) {
        reject(error)
      } finally {
        child.removeAllListeners("close")
        child.kill("SIGTERM")
      }
    })
  })

// Slowest first: the demo mostly waits for its server's 50 ms answers, 200 of them in a row.
const runs = {
  // PostgreSQL, three runner processes and a client: on a loaded machine it has needed over 90 s.
  "cluster-crawl.ts": () => run(join(examples, "cluster-crawl.ts"), process.env, 2 * TIMEOUT_MS),
  "demo.ts": () => run(join(examples, "demo.ts")),
  "blocking-executor.ts": () => run(join(examples, "blocking-executor.ts")),
  "pipeline.ts": () => run(join(examples, "pipeline.ts")),
  "fanout.ts": () => run(join(examples, "fanout.ts")),
  "proxy.ts": () => run(join(examples, "proxy.ts"), withoutExampleProxies),
  "seed-parallel.ts": () => run(join(examples, "seed-parallel.ts")),
  "adaptive.ts": () => run(join(examples, "adaptive.ts")),
  "smallest.ts": smallestAgainstTodos,
  "todos-server.ts": todosServer,
  // No curl on PATH: the node binary is started by its absolute path, so nothing else is needed.
  "blocking-executor.ts without curl": () =>
    run(join(examples, "blocking-executor.ts"), { ...process.env, PATH: join(root, "no-such-dir") })
}

// At most `slots` programs at once: more only make them fight over the CPUs (CI has two). A
// finished program hands its slot straight to the next in line.
const limited = (slots: number) => {
  const waiting: Array<() => void> = []
  let free = slots
  const acquire = (): Promise<void> => {
    if (free === 0) return new Promise((resolve) => waiting.push(resolve))
    free--
    return Promise.resolve()
  }
  const release = () => {
    const next = waiting.shift()
    if (next === undefined) free++
    else next()
  }
  return <A>(task: () => Promise<A>): Promise<A> => acquire().then(task).finally(release)
}
const SLOTS = 4

type Started = { [K in keyof typeof runs]: ReturnType<(typeof runs)[K]> }
let started: Started

describe("examples", { timeout: 5 * TIMEOUT_MS }, () => {
  beforeAll(() => {
    const slot = limited(SLOTS)
    const entries: ReadonlyArray<[string, () => Promise<unknown>]> = Object.entries(runs)
    started = Object.fromEntries(entries.map(([name, start]) => [name, slot(start)])) as Started
    // Every promise is awaited by a test; until then a rejection must not count as unhandled.
    for (const promise of Object.values(started)) promise.catch(() => {})
  })

  afterAll(() => {
    for (const child of children) child.kill("SIGTERM")
  })

  it("runs every program in examples/", () => {
    const programs = readdirSync(examples).filter((file) => file.endsWith(".ts") && !file.endsWith(".tmp.ts"))
    assert.deepStrictEqual(
      programs.sort(),
      Object.keys(runs)
        .filter((name) => name.endsWith(".ts"))
        .sort()
    )
  })

  it("demo.ts prints plain progress lines and the summary table with concurrency 16", async () => {
    const lines = succeeded(await started["demo.ts"])
    assert.match(lines.join("\n"), /^one after another\s+200\s+0\s+[\d.]+ s\s+1\.0x/m)
    assert.match(lines.join("\n"), /^concurrency 16\s+200\s+0\s+[\d.]+ s\s+[\d.]+x/m)
    // stdout is a pipe here: no carriage returns or escape codes, and the final state of each run.
    assert.notInclude(lines.join("\n"), "\r")
    assert.notInclude(lines.join("\n"), "\x1b")
    assert.include(lines.join("\n"), "200/200 failed 0 in flight 0 retried 0")
    assert.lengthOf(
      lines.filter((line) => line.includes("200/200")),
      2
    )
  })

  it("cluster-crawl.ts survives a runner's SIGKILL with one outcome per URL and perHost held", async () => {
    const text = succeeded(await started["cluster-crawl.ts"]).join("\n")
    assert.match(text, /^SIGKILL runner \d+/m)
    assert.match(text, /: 2000 succeeded in [\d.]+ s$/m)
    assert.match(text, /^outcomes: 2000 for 2000 URLs \(one each\)/m)
    // On failure, the example's own account of the peak (requests in flight, runners' lock logs).
    assert.match(text, /peak per origin: [1-4] \(perHost 4\)$/m, text.slice(text.indexOf("ran twice")))
  })

  it("adaptive.ts shows its origin's limit, baseline and reason, and the limit gauge", async () => {
    const lines = succeeded(await started["adaptive.ts"])
    const text = lines.join("\n")
    assert.match(text, /^1500\/1500 ok, 0 failed$/m)
    assert.match(text, /1500\/1500 {2}capacity 4 {2}limit \d+ \([a-z-]+\) {2}in flight 0 {2}baseline [\d.]+ ms/)
    assert.match(
      text,
      /^metric volley_fanout_origin_limit \{"origin":"http:\/\/127\.0\.0\.1:\d+"\} = \{"value":\d+\}$/m
    )
  })

  it("fanout.ts gets every answer within its per-origin bound, retrying the flaky ones", async () => {
    const lines = succeeded(await started["fanout.ts"])
    const summary = lines
      .join("\n")
      .match(/^120\/120 ok in \d+ ms; peak in flight: slow origin (\d+), fast origin (\d+)/m)
    assert.isNotNull(summary, lines.join("\n"))
    assert.isAtMost(Number(summary?.[1]), 4)
    assert.isAtMost(Number(summary?.[2]), 4)
    // Ten flaky endpoints answer 503 twice each before they work.
    assert.include(lines, `[${"#".repeat(30)}] 120/120  failed 0  in flight 0  retried 20`)
  })

  it("pipeline.ts reports its digests and the four documents that fail on their own", async () => {
    const lines = succeeded(await started["pipeline.ts"])
    const summary = lines[0]?.match(
      /^196 documents, 196,000 records digested .* at most (\d+) bodies held at once \(bound 12\)$/
    )
    assert.isNotNull(summary, lines.join("\n"))
    assert.isAtMost(Number(summary?.[1]), 12)
    const failed = lines.slice(1).filter((line) => line.trim().length > 0)
    assert.deepStrictEqual(
      failed.map((line) => line.replace(/ failed: (\w+):.*/, " $1").trim()),
      [
        "document 13 HttpClientError",
        "document 42 HandlerError",
        "document 113 HttpClientError",
        "document 142 HandlerError"
      ]
    )
  })

  it("blocking-executor.ts prints both rows; only on the executor does curl get the server's answer", async () => {
    const lines = succeeded(await started["blocking-executor.ts"])
    const row = (label: string) => lines.findIndex((line) => new RegExp(`^${label}\\s+loop delay p99`).test(line))
    const inline = row("inline")
    const executor = row("executor")
    assert.isAtLeast(inline, 0, lines.join("\n"))
    assert.isAtLeast(executor, 0, lines.join("\n"))
    assert.match(lines[inline + 1] ?? "", /curl → no answer in 2 s/)
    assert.match(
      lines[executor + 1] ?? "",
      /scrypt [0-9a-f]{16}…, gzip → \d+ bytes, curl → hello from the embedded server$/
    )
  })

  it("blocking-executor.ts without curl says what to install and exits non-zero", async () => {
    const finished = await started["blocking-executor.ts without curl"]
    assert.strictEqual(finished.code, 1, finished.stderr)
    assert.strictEqual(
      finished.stderr.trim(),
      "blocking-executor needs curl (not found on PATH): install it with `apt-get install curl`"
    )
    assert.strictEqual(finished.stdout, "")
  })

  it("proxy.ts gets the same answer direct, through tinyproxy and through microsocks", async () => {
    const lines = succeeded(await started["proxy.ts"])
    assert.include(lines, "direct     hello (Via: none)")
    assert.isTrue(
      lines.some((line) => /^HTTP proxy hello \(Via: 1\.1 \S+ \(tinyproxy\/[\d.]+\)\)$/.test(line)),
      lines.join("\n")
    )
    assert.include(lines, "SOCKS5     hello (Via: none)")
  })

  it("seed-parallel.ts gets 8 answers one after another, then 8 in parallel", async () => {
    const lines = succeeded(await started["seed-parallel.ts"])
    assert.lengthOf(
      lines.filter((line) => /^ {2}200 +152 bytes {2}http:\/\/127\.0\.0\.1:\d+\/item\/\d$/.test(line)),
      16
    )
    assert.match(lines.join("\n"), /^speed-up: [\d.]+x$/m)
  })

  it("todos-server.ts listens on $PORT and serves /todos/:id as { id, title }", async () => {
    const { line, todo, missing } = await started["todos-server.ts"]
    assert.match(line, /^todos server on http:\/\/127\.0\.0\.1:\d+\/todos\/:id \(Ctrl-C stops it\)$/)
    assert.deepStrictEqual(todo, { id: 2, title: "write the docs" })
    assert.strictEqual(missing, 404)
  })

  it("smallest.ts is the README's smallest example, verbatim", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8")
    const block = readme.match(/^## The smallest example\n[\s\S]*?^```ts\n([\s\S]*?)^```$/m)?.[1]
    assert.isDefined(block, "README.md has a ts block under '## The smallest example'")
    assert.strictEqual(readFileSync(join(examples, "smallest.ts"), "utf8"), block)
  })

  it("smallest.ts prints the three todos of the todos server", async () => {
    const { finished, requests } = await started["smallest.ts"]
    succeeded(finished)
    const todos = [
      { id: 1, title: "buy milk" },
      { id: 2, title: "write the docs" },
      { id: 3, title: "ship 0.1.0" }
    ]
    assert.strictEqual(finished.stdout, `${inspect(todos)}\n`)
    assert.deepStrictEqual(requests, ["GET /todos/1", "GET /todos/2", "GET /todos/3"])
  })
})

describe("progressLine", () => {
  const progress = (done: number, inFlight = 1) => ({
    total: 10,
    done,
    succeeded: done,
    failed: 0,
    inFlight,
    retried: 0
  })
  const fake = (isTTY: boolean, columns = 80) => {
    const written: Array<string> = []
    let clock = 0
    return {
      written,
      tick: (ms: number) => (clock += ms),
      options: { out: { isTTY, columns, write: (chunk: string) => written.push(chunk) }, now: () => clock }
    }
  }

  it("on a terminal clears the line it redraws, at most every 50 ms, and ends it with a newline", () => {
    const { written, tick, options } = fake(true)
    const line = progressLine((p) => `${bar(p, 10)} ${p.done}/10 in flight ${p.inFlight}`, options)
    line.update(progress(0, 12))
    tick(10)
    line.update(progress(1)) // held back: 10 ms after the last draw
    tick(40)
    line.update(progress(2))
    line.update(progress(10, 0))
    line.update(progress(10, 0)) // after the final state: nothing
    line.end()
    assert.deepStrictEqual(written, [
      "\r\x1b[2K[..........] 0/10 in flight 12",
      "\r\x1b[2K[##........] 2/10 in flight 1",
      "\r\x1b[2K[##########] 10/10 in flight 0\n"
    ])
  })

  it("on a terminal cuts the line to its width, since a wrapped line cannot be redrawn", () => {
    const { written, options } = fake(true, 12)
    const line = progressLine((p) => `${p.done}/10 in flight ${p.inFlight}`, options)
    line.update(progress(3))
    line.end()
    assert.deepStrictEqual(written, ["\r\x1b[2K3/10 in fli", "\n"])
  })

  it("piped, prints plain lines at most once a second, and the last state when the batch ends", () => {
    const { written, tick, options } = fake(false)
    const line = progressLine((p) => `${p.done}/10`, options)
    line.update(progress(0))
    tick(999)
    line.update(progress(1))
    tick(1)
    line.update(progress(2))
    tick(10)
    line.update(progress(3)) // held back, then drawn by `end` (the batch stopped before its total)
    line.end()
    line.end()
    assert.deepStrictEqual(written, ["0/10\n", "2/10\n", "3/10\n"])
  })
})
