import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"

/** True while `pid` runs (a zombie counts as gone: `kill -0` would say it is alive). */
export const isAlive = (pid: number): boolean => {
  try {
    const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** Sends `signal`, waits up to `graceMillis` for the process to end, then SIGKILLs it. */
export const stopPid = async (pid: number, signal: NodeJS.Signals = "SIGTERM", graceMillis = 10_000): Promise<void> => {
  try {
    process.kill(pid, signal)
  } catch {
    return
  }
  const until = Date.now() + graceMillis
  while (Date.now() < until) {
    if (!isAlive(pid)) return
    await sleep(25)
  }
  try {
    process.kill(pid, "SIGKILL")
  } catch {
    return
  }
  while (isAlive(pid)) await sleep(25)
}

/** A child process started by a test, with its output kept in memory. */
export interface Child {
  readonly pid: number
  readonly output: () => string
  /** Resolves with the exit code (or the signal's name) once it has ended. */
  readonly exited: Promise<number | string>
  readonly stop: (signal?: NodeJS.Signals, graceMillis?: number) => Promise<void>
  /** Resolves when a line of output contains `text`; rejects when it exits first or after `timeoutMillis`. */
  readonly waitFor: (text: string, timeoutMillis?: number) => Promise<void>
}

/**
 * Runs a TypeScript entry with this process's Node (Node 24 inside vitest) and the `@volley/source`
 * condition. `PORT`, `HOST` and `NODE_OPTIONS` are removed from its environment unless `env` sets them:
 * effect's cluster reads `PORT`/`HOST` even when the address is given in code.
 */
export const spawnNode = (entry: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Child => {
  const clean = { ...process.env }
  delete clean.PORT
  delete clean.HOST
  delete clean.NODE_OPTIONS
  const child = ChildProcess.spawn(process.execPath, ["--conditions=@volley/source", entry, ...args], {
    env: { ...clean, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const watchers = new Set<() => void>()
  const append = (chunk: Buffer) => {
    output += chunk.toString("utf8")
    if (output.length > 1_000_000) output = output.slice(-500_000)
    for (const watcher of watchers) watcher()
  }
  child.stdout.on("data", append)
  child.stderr.on("data", append)
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      resolve(code ?? signal ?? "unknown")
      for (const watcher of watchers) watcher()
    })
  )
  if (child.pid === undefined) throw new Error(`could not spawn ${entry}`)
  const pid = child.pid
  return {
    pid,
    output: () => output,
    exited,
    stop: (signal = "SIGTERM", graceMillis = 10_000) => stopPid(pid, signal, graceMillis),
    waitFor: (text, timeoutMillis = 30_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (output.includes(text)) {
            done()
            resolve()
          } else if (child.exitCode !== null || child.signalCode !== null) {
            done()
            reject(new Error(`${entry} exited before printing ${JSON.stringify(text)}:\n${output.slice(-4000)}`))
          }
        }
        const timer = setTimeout(() => {
          done()
          reject(
            new Error(`${entry} did not print ${JSON.stringify(text)} in ${timeoutMillis} ms:\n${output.slice(-4000)}`)
          )
        }, timeoutMillis)
        const done = () => {
          clearTimeout(timer)
          watchers.delete(check)
        }
        watchers.add(check)
        check()
      })
  }
}
