// Renders bench/results/http.md and http.svg from the measured results. Run on its own
// (`node http/report.ts`) it re-renders them from bench/results/http.json.
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { svg } from "./chart.ts"

export interface Results {
  readonly date: string
  readonly machine: { readonly cpus: number; readonly model: string; readonly node: string }
  readonly origin: { readonly kind: string; readonly version: string; readonly latencyOrigin: string }
  readonly concurrency: number
  readonly requests: number
  readonly runs: number
  /** The client every throughput ratio divides by; absent (raw undici Pool.request) in older results. */
  readonly baseline?: string
  /** The machine's 1-minute load average over the throughput measurements (2 cores); absent in older results. */
  readonly load?: { readonly min: number; readonly median: number; readonly max: number }
  readonly latency: {
    readonly requests: number
    readonly delayMs: number
    readonly idealRps: number
    /** One request on its own (median of 100 sequential ones); absent in results from before it was measured. */
    readonly loneMs?: number
    readonly ceilingRps?: number
  }
  /** Main-thread CPU µs per request of each form with no network (overhead.ts); absent in older results. */
  readonly overhead?: {
    readonly requests: number
    readonly rounds: number
    readonly forms: ReadonlyArray<{ readonly name: string; readonly medianUs: number }>
  } | null
  /** CPU µs per request in one warm process, interleaved rounds (cpu.ts), per body; absent in older results. */
  readonly warm?: ReadonlyArray<{
    readonly body: string
    readonly requests: number
    readonly rounds: number
    readonly clients: ReadonlyArray<{ readonly name: string; readonly allUs: number; readonly mainUs: number }>
  }> | null
  readonly rows: ReadonlyArray<{
    readonly client: string
    readonly label: string
    readonly bodies: ReadonlyArray<{
      readonly body: string
      readonly runs: ReadonlyArray<number>
      readonly median: number
      readonly ratio: number
      readonly cpuUs: number
      /** The floor's CPU µs per request over this client's; absent in older results. */
      readonly cpuRatio?: number
      /** CPU µs per request of each run; absent in older results. */
      readonly cpuRuns?: ReadonlyArray<number>
      /** Full (mark-compact) GCs in each run's timed requests; absent in older results. */
      readonly majorGcs?: ReadonlyArray<number>
    }>
    readonly latency: {
      readonly runs: ReadonlyArray<number>
      readonly median: number
      readonly fractionOfIdeal: number
      /** req/s over raw undici Pool.request's in the same run; absent in older results. */
      readonly ratioToPoolRequest?: number
    }
  }>
  /** The README's example (Http.getJson) against one small JSON object, in the same run; absent in older results. */
  readonly readme?: {
    readonly path: string
    readonly body: string
    readonly rows: ReadonlyArray<{
      readonly client: string
      readonly label: string
      readonly median: number
      readonly ratio: number
      readonly cpuUs: number
    }>
  }
  readonly memory: {
    readonly done: number
    readonly ms: number
    readonly beforeMiB: number
    readonly peakMiB: number
    readonly endMiB: number
    readonly growthMiB: number
    readonly heapBeforeMiB: number
    readonly heapPeakMiB: number
    readonly heapAfterGcMiB: number
    readonly rssByQuarterMiB: ReadonlyArray<number | null>
    readonly samples: ReadonlyArray<unknown>
  } | null
  readonly pythonMissing: ReadonlyArray<string>
}

const resultsDir = join(import.meta.dirname, "..", "results")

export const writeReport = (r: Results): void => {
  writeFileSync(join(resultsDir, "http.json"), `${JSON.stringify(r, null, 2)}\n`)
  const { md, chart } = render(r)
  writeFileSync(join(resultsDir, "http.svg"), chart)
  writeFileSync(join(resultsDir, "http.md"), md)
}

// Full GCs per run at each body size: at 16 KiB they, not the client's code, set a run's CPU.
const fullGcs = (r: Results): Array<string> => {
  if (!r.rows.some((row) => row.bodies.some((b) => b.majorGcs !== undefined && b.majorGcs.length > 0))) return []
  const bodies = r.rows[0]?.bodies.map((b) => b.body) ?? []
  return [
    "",
    "Full (mark-compact) GCs during each run's timed requests, run by run, with the run's CPU µs per request. A body read as bytes leaves little on the JS",
    "heap but its socket buffer (16 KiB) outside it, which V8 counts toward the limit that starts a full collection:",
    "most runs reclaim those buffers in young-generation scavenges, but some fall into a full collection every ~1,000",
    "requests (tens of ms each on a 30 MiB heap) and pay ~20-60 µs more CPU per request, whichever client it is.",
    "",
    `| client | ${bodies.map((b) => `${b} full GCs per run`).join(" | ")} |`,
    `| --- | ${bodies.map(() => "---:").join(" | ")} |`,
    ...r.rows.map(
      (row) =>
        `| ${row.label} | ${row.bodies.map((b) => (b.majorGcs ?? []).map((n, i) => (b.cpuRuns?.[i] === undefined ? `${n}` : `${n} (${b.cpuRuns[i]})`)).join(", ")).join(" | ")} |`
    )
  ]
}

// The batch returns every body; the floor lets each go. Set beside the floor that keeps its
// bodies to the end (`floor-keep`), the batch's ratio shows what is volley's and what is memory's.
const keptSection = (r: Results): Array<string> => {
  const keeping = r.rows.find((row) => row.client === "floor-keep")
  const batch = r.rows.find((row) => row.client === "volley")
  if (keeping === undefined || batch === undefined) return []
  const paired = (body: string) => {
    const kept = keeping.bodies.find((b) => b.body === body)?.runs ?? []
    const runs = batch.bodies.find((b) => b.body === body)?.runs ?? []
    const ratios = runs.map((rps, i) => rps / (kept[i] ?? Number.NaN)).sort((a, b) => a - b)
    return ratios.length === 0 ? "n/a" : `${ratios[Math.floor(ratios.length / 2)]!.toFixed(2)}x`
  }
  const cells = keeping.bodies.map(
    (b) => `${b.body}: ${paired(b.body)} (the keeping floor ${b.ratio.toFixed(2)}x the floor)`
  )
  return [
    "",
    "`Fanout.allSettled` returns every body, so it holds all of them (20,000 x 16 KiB is 328 MB) until the batch",
    'ends; the floor lets each body go when its response ends. The row "keeping every body to the end" is the floor',
    "holding its bodies the same way: the cost of that memory on this machine (page faults, and V8's full",
    `collections for the external memory), whoever holds it. The batch's req/s over the keeping floor's, per round: ${cells.join("; ")}.`,
    "A batch whose results need not hold the body (a `read` that keeps what it needs, or `Fanout.stream`) does not pay it."
  ]
}

const render = (r: Results) => {
  const floor = r.baseline === "floor"
  const baseLabel = floor ? "the undici Pool.dispatch floor" : "raw undici Pool.request"
  const bodies = r.rows[0]?.bodies.map((b) => b.body) ?? []
  const memory = r.memory
  const chart = svg(
    `req/s relative to ${baseLabel} (${r.requests} GETs, concurrency ${r.concurrency}, median of ${r.runs})`,
    r.rows.map((row) => ({
      client: row.label,
      values: row.bodies.map((b) => ({ series: `${b.body} body`, ratio: b.ratio }))
    }))
  )
  const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : "n/a")
  // The floor's best run over the client's best (least CPU per request): other processes only
  // ever add CPU, so each one's best run is the closest to what its code costs.
  const floorRow = r.rows.find((row) => row.client === "floor")
  const best = (body: Results["rows"][number]["bodies"][number]) => {
    const floorRuns = floorRow?.bodies.find((b) => b.body === body.body)?.cpuRuns
    if (floorRuns === undefined || body.cpuRuns === undefined) return "n/a"
    return `${fmt(Math.min(...floorRuns) / Math.min(...body.cpuRuns))}x`
  }
  const md = [
    "# HTTP fan-out benchmark",
    "",
    `Generated by \`pnpm bench http\` on ${r.date} (${r.machine.cpus} × ${r.machine.model}, Node ${r.machine.node}).`,
    `Origin: ${r.origin.kind} ${r.origin.version}, one worker, keep-alive, on 127.0.0.1${r.origin.kind === "node:http" ? " — **nginx was not installed, so a tuned node:http server in a child process stood in**" : ""}.`,
    "",
    `${r.requests.toLocaleString("en")} keep-alive GETs at concurrency ${r.concurrency}, each body read in full; every number is the median of ${r.runs} runs,`,
    "each run in a fresh process after a 2,000-request warm-up, rounds interleaved across clients.",
    ...(floor
      ? [
          "The ratio compares with **the floor** measured in the same run: undici's `Pool.dispatch` (64 connections) with a",
          "bare handler object per request, which keeps the body chunks as undici hands them over (no promise, no Node",
          "`Readable`, no copy). No client on undici can do less; raw undici `Pool.request` is a row like the others.",
          "Each ratio is the median over the rounds of the client's req/s over the floor's in the same round. volley's",
          "targets (issue 11): the idiom >= 0.8x, the batch API >= 0.9x, at both body sizes.",
          ...(r.load === undefined
            ? []
            : [
                "",
                `The machine was shared: its 1-minute load average over these measurements was ${r.load.min}–${r.load.max}`,
                `(median ${r.load.median}) on ${r.machine.cpus} cores, so req/s (and their ratios) moved with what else ran.`,
                "\"floor/CPU\" is the floor's CPU µs per request over the client's, a steadier view of the same ratio;",
                "\"best runs\" divides the floor's least CPU per request of its runs by the client's least: other processes",
                "only ever add CPU, so a best run is the closest to what the code itself costs."
              ])
        ]
      : ["The ratio compares with raw undici `Pool.request` measured in the same run."]),
    "",
    "![req/s relative to the floor](http.svg)",
    "",
    ...(floor
      ? [
          `| client | ${bodies.map((b) => `${b} req/s | ${b} vs floor | ${b} CPU µs/req | ${b} floor/CPU | ${b} best runs`).join(" | ")} |`,
          `| --- | ${bodies.map(() => "---: | ---: | ---: | ---: | ---:").join(" | ")} |`,
          ...r.rows.map(
            (row) =>
              `| ${row.label} | ${row.bodies.map((b) => `${b.median} | ${fmt(b.ratio)}x | ${b.cpuUs} | ${b.cpuRatio === undefined ? "n/a" : `${fmt(b.cpuRatio)}x`} | ${best(b)}`).join(" | ")} |`
          )
        ]
      : [
          `| client | ${bodies.map((b) => `${b} req/s | ${b} ratio | ${b} CPU µs/req`).join(" | ")} |`,
          `| --- | ${bodies.map(() => "---: | ---: | ---:").join(" | ")} |`,
          ...r.rows.map(
            (row) =>
              `| ${row.label} | ${row.bodies.map((b) => `${b.median} | ${fmt(b.ratio)}x | ${b.cpuUs}`).join(" | ")} |`
          )
        ]),
    "",
    "CPU µs/req is the client process's own CPU time (user + system) per request, median of the runs: it moves much",
    "less than req/s when other processes compete for the two cores.",
    ...fullGcs(r),
    ...keptSection(r),
    "",
    ...readmeSection(r),
    `## Latency-bound: origin answers after ${r.latency.delayMs} ms`,
    "",
    `${r.latency.requests.toLocaleString("en")} GETs at concurrency ${r.concurrency} against ${r.origin.latencyOrigin === "nginx" ? "nginx `echo_sleep 0.02`" : "the node:http origin (`setTimeout` 20 ms)"}; the ideal is C / 20 ms = ${r.latency.idealRps} req/s.`,
    "",
    ...(r.latency.loneMs === undefined || r.latency.ceilingRps === undefined
      ? [
          "| client | req/s (median) | fraction of ideal |",
          "| --- | ---: | ---: |",
          ...r.rows.map((row) => `| ${row.label} | ${row.latency.median} | ${fmt(row.latency.fractionOfIdeal)} |`)
        ]
      : [
          `One request on its own takes ${r.latency.loneMs} ms here (median of 100 sent one after another: the origin's`,
          `timer is not exact), so no client can pass C / ${r.latency.loneMs} ms = ${r.latency.ceilingRps} req/s`,
          `(${fmt(r.latency.ceilingRps / r.latency.idealRps)} of the ideal). When 64 answers fall due at once, the single-worker origin and the`,
          "client also process them one by one, which takes a few more milliseconds per round.",
          "",
          "| client | req/s (median) | fraction of ideal | fraction of ceiling | vs Pool.request |",
          "| --- | ---: | ---: | ---: | ---: |",
          ...r.rows.map(
            (row) =>
              `| ${row.label} | ${row.latency.median} | ${fmt(row.latency.fractionOfIdeal)} | ${fmt(row.latency.median / (r.latency.ceilingRps ?? 1))} | ${row.latency.ratioToPoolRequest === undefined ? "n/a" : `${fmt(row.latency.ratioToPoolRequest)}x`} |`
          )
        ]),
    "",
    ...warmSection(r),
    ...(r.overhead == null
      ? []
      : [
          "## Without a network: the clients' own JavaScript",
          "",
          `\`http/overhead.ts\`: ${r.overhead.requests.toLocaleString("en")} requests per form to an in-process undici dispatcher that answers`,
          "each on the next event-loop turn (status 200, 2 bytes; the `-json` forms: `/todo`'s 21-byte JSON object, decoded",
          "with the schema above), so neither socket writes nor the origin's CPU count;",
          `main-thread CPU µs per request, median of ${r.overhead.rounds} interleaved rounds. \`effect-floor\` is Effect's own least:`,
          "`Effect.forEach` at the same concurrency over an `Effect.callback` that dispatches a bare handler (a fiber, a",
          "suspension and a resume per request); what a volley form costs beyond it is volley's.",
          "",
          "| form | µs per request | over the floor |",
          "| --- | ---: | ---: |",
          ...r.overhead.forms.map((f) => {
            const floorUs = r.overhead?.forms.find((g) => g.name === "floor")?.medianUs ?? 0
            return `| ${f.name} | ${f.medianUs.toFixed(2)} | +${(f.medianUs - floorUs).toFixed(2)} |`
          }),
          ""
        ]),
    "## Memory: a streamed batch of 100,000 requests",
    "",
    memory === null
      ? "The memory run failed; see the console output."
      : [
          `${memory.done.toLocaleString("en")} GETs (2 B bodies) streamed through volley at concurrency ${r.concurrency} in ${(memory.ms / 1000).toFixed(1)} s,`,
          `RSS sampled every 50 ms: ${memory.beforeMiB} MiB before (after a 5,000-request warm-up), peak ${memory.peakMiB} MiB, ${memory.endMiB} MiB at the end:`,
          `**growth ${memory.growthMiB} MiB** over the whole batch (${memory.samples.length} samples in http.json).`,
          `RSS after 25k / 50k / 75k / 100k requests: ${memory.rssByQuarterMiB.join(" / ")} MiB. JS heap: ${memory.heapBeforeMiB} MiB before,`,
          `peak ${memory.heapPeakMiB} MiB, ${memory.heapAfterGcMiB} MiB after a full GC at the end, so nothing per request is retained;`,
          "the growth is V8 letting the heap (and the allocator its pages) expand between major collections."
        ].join("\n"),
    "",
    "## Where the time goes",
    "",
    "`cd bench && node --conditions=@volley/source http/profile.ts <client> [/2b|/16k]` profiles the timed requests of one client",
    "(V8 sampling profiler) and prints CPU µs per request by area. What it showed while the fast path was built:",
    "",
    "- The floor (undici `Pool.dispatch`, a bare handler object) spends its CPU in undici's HTTP/1 parser, its pool and",
    "  the socket writes (`writeLatin1String`, a third of it at 2 B). Everything a client adds is measured against it.",
    "- The card's idiom (`Effect.forEach` over `Http.getText`) used to pay for a client span per request although Effect's",
    "  default tracer records nothing, a `Scope` and an `AbortController` per call (`HttpClient.withScope` + `Effect.scoped`)",
    "  and the abort at scope close, whose `DOMException` alone was about 10% of the CPU: 83 µs per request against",
    "  the floor's 38 in one profile. Now `NodeHttpClient` skips the span when `Tracer.nativeTracer` is in place (still",
    "  sending the enclosing span's `traceparent`), and `Http.*` run the batch engine's exchange (execute, drain a",
    "  non-2xx body into its error, read) with no Scope per call: 41 µs in the same profile.",
    "- At 16 KiB the gap was the body path: each body was copied into a fresh `ArrayBuffer`, then decoded by `TextDecoder`",
    "  or wrapped again, and the copies drove the GC. A body that arrived in one chunk is now read as bytes without a",
    "  copy (a view of the socket read, as undici's own body stream hands it out) and as text with Buffer's UTF-8",
    "  decoder. What remains over the floor is the fiber runtime (a fiber per `forEach` item, one suspension per",
    "  request) and, for text, the string itself.",
    "- With OpenTelemetry every request goes through Effect's generic client wrapper (span, attributes, trace headers,",
    "  an `AbortController`, a `FinalizationRegistry` entry and a response wrapper) plus the SDK's span and its context",
    "  propagation around every fiber step: that row is the price of recording a span per request.",
    "- Effect's own `HttpClient` on platform-node's undici client adds undici's `request()` API (a promise and a Node",
    "  `Readable` per body, each resumed through an `AsyncResource`) to the generic wrapper and the span.",
    "- `Fanout` workers pull jobs (no fiber per request) and run the same exchange; a batch `deadline` costs one timer per",
    "  batch, not one per request (compare the allSettled rows).",
    "- A `Fanout` worker with the default policy sends its items' first attempts one after another from a single",
    "  suspension of its fiber while they succeed: NodeHttpClient starts each request without an effect (a",
    "  registry-symbol hook) and hands a complete 2xx body read by a built-in read back as an `Exit`, which the worker",
    "  settles in plain JavaScript before it sends its next request, in the async context its fiber runs in. So no",
    "  fiber resume, `AsyncResource` or Effect step per request; anything else (a failure, a redirect, a body still",
    "  arriving, a `read` of the caller's own) resumes the fiber. No network, default read: 2.95 to 2.0 µs.",
    "- The exchange took 11 Effect steps per idiom request (counted by wrapping the fiber's run loop): a step to find the",
    "  client, two failure handlers of the retry policy, the response handed back to the fiber, then a step to read",
    "  it. NodeHttpClient now runs `@volley/core`'s exchange itself (a registry-symbol hook) on the fiber `Http.*` hand",
    "  it: it hands the response to the read, a body that has arrived whole goes to the read with nothing to release",
    "  around it, and `Http.getText` / `getBytes` / a batch's default read resume the fiber with the body itself; the",
    "  policy needs one handler. 6 steps (a batch with its own `read`: 13 to 7); no network: 4.0 to 3.5-3.7 µs.",
    "- At 16 KiB `Fanout.allSettled` and `Fanout.stream` cost the same: interleaved in one process",
    "  (`node --expose-gc http/cpu.ts floor,volley,volley-stream /16k`) both took ~60 µs of main-thread CPU per request",
    "  against the floor's ~46 (load average 12). A fresh process's CPU per request moves by 20-60 µs with full GCs and",
    "  with the neighbours' load (the per-run numbers above): that, not its path, once made allSettled look 20 µs dearer.",
    "",
    "## How to reproduce",
    "",
    "```sh",
    "apt-get install -y --no-install-recommends nginx libnginx-mod-http-echo   # origin (else node:http fallback)",
    "apt-get install -y --no-install-recommends python3-requests python3-aiohttp python3-httpx   # python clients (optional)",
    "pnpm bench http",
    "```",
    "",
    "Clients: undici 8.13.1 `Pool` (64 connections), through `dispatch` with a bare handler (the floor) and through",
    "`request()`; volley's idiom on `NodeHttpClient.layer()` with no tracer configured, with",
    "`HttpClient.TracerDisabledWhen`, and with OpenTelemetry (`@effect/opentelemetry` over the SDK's `BasicTracerProvider`,",
    "a `BatchSpanProcessor` into its in-memory exporter); Effect `HttpClient` from `@effect/platform-node` `layerUndici`",
    "(undici `Agent`), with default tracing and with `HttpClient.TracerDisabledWhen` set to always; Node's global `fetch` with",
    "`p-limit`; got and axios with a keep-alive `http.Agent` (64 sockets); python clients from Debian's packages",
    "(`requests` in `loop.run_in_executor` with 64 threads, each with its own `Session` so connections are kept alive;",
    "`aiohttp` with a 64-connection `TCPConnector`; `httpx.AsyncClient` limited to 64 connections).",
    r.pythonMissing.length > 0 ? `\nNot measured (python module missing): ${r.pythonMissing.join(", ")}.` : "",
    ""
  ].join("\n")

  return { md, chart }
}

// The README's first example, `Effect.forEach` over `Http.getJson` with a schema, beside the floor
// and the text idiom on the same JSON body.
const readmeSection = (r: Results): ReadonlyArray<string> => {
  const readme = r.readme
  if (readme === undefined) return []
  return [
    "## The README's example: `Http.getJson` with a schema",
    "",
    `The same ${r.requests.toLocaleString("en")} GETs at concurrency ${r.concurrency} against \`${readme.path}\`, which answers \`${readme.body}\``,
    `(${readme.body.length} B, \`application/json\`), in fresh processes interleaved with the floor on the same path (median of ${r.runs}).`,
    "The JSON clients decode each body with `Schema.Struct({ id: Schema.Number, title: Schema.String })`, as the",
    "README's first example does; the floor and the text idiom only read it. What the JSON rows cost beyond the text",
    "idiom is the JSON parse and Effect Schema's decode.",
    "",
    "| client | req/s | vs floor | CPU µs/req |",
    "| --- | ---: | ---: | ---: |",
    ...readme.rows.map(
      (row) =>
        `| ${row.label} | ${row.median} | ${Number.isFinite(row.ratio) ? row.ratio.toFixed(2) : "n/a"}x | ${row.cpuUs} |`
    ),
    ""
  ]
}

// The warm-process table: CPU per request after the JIT has settled, and the floor's over it.
const warmSection = (r: Results): ReadonlyArray<string> => {
  const warm = r.warm
  if (warm == null || warm.length === 0) return []
  const names = warm[0]!.clients.map((c) => c.name)
  const label = (name: string) => r.rows.find((row) => row.client === name)?.label ?? name
  const cell = (body: (typeof warm)[number], name: string) => {
    const floor = body.clients.find((c) => c.name === "floor")?.allUs ?? Number.NaN
    const us = body.clients.find((c) => c.name === name)?.allUs ?? Number.NaN
    return `${us.toFixed(1)} | ${(floor / us).toFixed(2)}x`
  }
  return [
    "## A warm process: CPU per request once the JIT has settled",
    "",
    `\`http/cpu.ts\`: the clients below in one process against the same origin, each warmed up, then ${warm[0]!.rounds} rounds of`,
    `${warm[0]!.requests.toLocaleString("en")} requests each, interleaved client by client; the median over rounds of the process's CPU µs per`,
    "request (every thread), and the floor's over it. The table above runs each client in a fresh process, where",
    "the first tens of thousands of requests also pay for V8 compiling the client's code (more code, more to",
    "compile): this is the steady state of a long-running service.",
    "",
    `| client | ${warm.map((b) => `${b.body} CPU µs/req | ${b.body} floor/CPU`).join(" | ")} |`,
    `| --- | ${warm.map(() => "---: | ---:").join(" | ")} |`,
    ...names.map((name) => `| ${label(name)} | ${warm.map((b) => cell(b, name)).join(" | ")} |`),
    ""
  ]
}

// `node http/report.ts` renders the report again from http.json (after its text changed).
if (import.meta.main) {
  const r = JSON.parse(readFileSync(join(resultsDir, "http.json"), "utf8")) as Results
  const { md, chart } = render(r)
  writeFileSync(join(resultsDir, "http.svg"), chart)
  writeFileSync(join(resultsDir, "http.md"), md)
}
