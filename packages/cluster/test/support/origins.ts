import * as Http from "node:http"

/** A loopback HTTP origin that counts what it sees: requests at once (and the peak), hits per path. */
export interface Origin {
  readonly url: string
  readonly inFlight: () => number
  readonly peak: () => number
  /** The requests in flight when the peak was reached (path, arrival in `Date.now()` ms), to explain a peak. */
  readonly atPeak: () => { readonly at: number; readonly requests: ReadonlyArray<readonly [string, number]> }
  readonly hits: ReadonlyMap<string, number>
  /** Starts counting the peak again from what is in flight now (for one test's job). */
  readonly resetPeak: () => void
  readonly close: () => Promise<void>
}

/** Starts `count` origins; each answers `ok` after `delayMillis`, or `?delay=<ms>` (a latency-bound origin), with `?status=<code>`. */
export const startOrigins = async (count: number, delayMillis: number): Promise<ReadonlyArray<Origin>> =>
  Promise.all(
    Array.from({ length: count }, async () => {
      let inFlight = 0
      let peak = 0
      const live = new Map<object, readonly [string, number]>()
      let atPeak = { at: 0, requests: [] as ReadonlyArray<readonly [string, number]> }
      const hits = new Map<string, number>()
      const server = Http.createServer((request, response) => {
        inFlight++
        const path = request.url ?? "/"
        live.set(response, [path, Date.now()])
        if (inFlight > peak) atPeak = { at: Date.now(), requests: [...live.values()] }
        peak = Math.max(peak, inFlight)
        hits.set(path, (hits.get(path) ?? 0) + 1)
        let open = true
        // "close" fires when the answer is sent or the client goes away (a runner killed mid-request).
        response.on("close", () => {
          if (open) inFlight--
          live.delete(response)
          open = false
        })
        const delay = /[?&]delay=(\d+)/.exec(path)?.[1]
        const status = /[?&]status=(\d+)/.exec(path)?.[1]
        setTimeout(
          () => {
            response.statusCode = status === undefined ? 200 : Number(status)
            response.end("ok")
          },
          delay === undefined ? delayMillis : Number(delay)
        )
      })
      server.keepAliveTimeout = 60_000
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
      const address = server.address() as { port: number }
      return {
        url: `http://127.0.0.1:${address.port}`,
        inFlight: () => inFlight,
        peak: () => peak,
        atPeak: () => atPeak,
        hits,
        resetPeak: () => {
          peak = inFlight
          atPeak = { at: Date.now(), requests: [...live.values()] }
        },
        close: () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections()
            server.close(() => resolve())
          })
      }
    })
  )
