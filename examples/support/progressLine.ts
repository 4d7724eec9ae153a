// A progress line for Fanout's `onProgress`. On a terminal it redraws one line in place, at most
// every 50 ms: `\r` alone leaves the tail of a longer previous line behind ("retried 00"), so it
// clears the line first (`\x1b[2K`) and cuts it to the terminal's width (a wrapped line cannot be
// redrawn). Piped or in CI, where `\r` is noise, it prints plain lines, at most one a second.
// Either way the final state is always drawn, and ends with a newline.
import type { Fanout } from "@volley/core"

export interface ProgressLine {
  /** Give this to `onProgress`. */
  readonly update: (progress: Fanout.Progress) => void
  /** Draws the last state if it was held back, and ends the line; call it when the batch ends however it ends. */
  readonly end: () => void
}

/** Where the line goes: `process.stdout` by default. */
export interface Output {
  readonly isTTY?: boolean | undefined
  readonly columns?: number | undefined
  write(chunk: string): unknown
}

export const progressLine = (
  render: (progress: Fanout.Progress) => string,
  options: { readonly out?: Output; readonly now?: () => number } = {}
): ProgressLine => {
  const out = options.out ?? process.stdout
  const now = options.now ?? (() => performance.now())
  const tty = out.isTTY === true
  const interval = tty ? 50 : 1000
  let last = Number.NEGATIVE_INFINITY
  let held: Fanout.Progress | undefined
  let ended = false
  const draw = (progress: Fanout.Progress, final: boolean) => {
    held = undefined
    last = now()
    ended = final
    const line = render(progress)
    if (!tty) out.write(`${line}\n`)
    else out.write(`\r\x1b[2K${line.slice(0, Math.max(1, (out.columns ?? 80) - 1))}${final ? "\n" : ""}`)
  }
  return {
    update: (progress) => {
      if (ended) return
      const final = progress.total !== undefined && progress.done === progress.total && progress.inFlight === 0
      if (final || now() - last >= interval) draw(progress, final)
      else held = progress
    },
    end: () => {
      if (ended) return
      if (held !== undefined) draw(held, true)
      else if (tty && last !== Number.NEGATIVE_INFINITY) out.write("\n")
      ended = true
    }
  }
}

/** `[########......]`: the share of the batch that is done. */
export const bar = (progress: Fanout.Progress, width = 30): string => {
  const filled = Math.round((progress.done / Math.max(1, progress.total ?? 0)) * width)
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`
}
