import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { freePort } from "./ports.ts"
import { isAlive, stopPid } from "./processes.ts"

/** A private PostgreSQL server for one test file: its own data dir in a temp dir, on a free loopback port. */
export interface Postgres {
  readonly port: number
  readonly dir: string
  readonly url: string
  /** Creates a database and returns its URL. */
  readonly createDatabase: (name: string) => Promise<string>
  /** Stops the server (`mode` as pg_ctl's `-m`); `start` brings it back on the same port and data. */
  readonly stop: (mode?: "fast" | "immediate") => Promise<void>
  readonly start: () => Promise<void>
  /** Stops the server and removes its directory. */
  readonly dispose: () => Promise<void>
}

const bin = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = Fs.existsSync(root) ? Fs.readdirSync(root).sort((a, b) => Number(b) - Number(a)) : []
  const found = versions.find((v) => Fs.existsSync(Path.join(root, v, "bin", "initdb")))
  if (found === undefined) {
    throw new Error("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/provision.sh")
  }
  return Path.join(root, found, "bin")
}

const asPostgres = (command: string, timeout = 30_000): Promise<string> =>
  new Promise((resolve, reject) => {
    // We run as root; PostgreSQL refuses to run as root, so every server command goes through `su postgres`.
    ChildProcess.execFile("su", ["postgres", "-s", "/bin/sh", "-c", command], { timeout }, (error, stdout, stderr) =>
      error === null ? resolve(stdout) : reject(new Error(`${command}: ${error.message}\n${stderr}`))
    )
  })

const psql = (port: number, sql: string): Promise<string> =>
  new Promise((resolve, reject) => {
    ChildProcess.execFile(
      "psql",
      ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
      { timeout: 15_000 },
      (error, stdout, stderr) => (error === null ? resolve(stdout) : reject(new Error(`psql ${sql}: ${stderr}`)))
    )
  })

const readPid = (dir: string): number | undefined => {
  try {
    const first = Fs.readFileSync(Path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0]
    const pid = Number(first)
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** Starts a private PostgreSQL (initdb + pg_ctl start) and waits until it accepts queries. */
export const startPostgres = async (): Promise<Postgres> => {
  const pgBin = bin()
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "volley-pg-"))
  Fs.chmodSync(dir, 0o755)
  ChildProcess.execFileSync("chown", ["postgres", dir])
  const port = await freePort()
  await asPostgres(`${pgBin}/initdb -D ${dir}/data -A trust -U postgres --no-sync >/dev/null`)
  let pid: number | undefined
  const start = async () => {
    await asPostgres(
      `${pgBin}/pg_ctl -D ${dir}/data -w -t 30 -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" -l ${dir}/pg.log start >/dev/null`
    )
    pid = readPid(dir)
  }
  const stop = async (mode: "fast" | "immediate" = "fast") => {
    const current = pid ?? readPid(dir)
    try {
      await asPostgres(`${pgBin}/pg_ctl -D ${dir}/data -m ${mode} -w -t 10 stop >/dev/null`, 15_000)
    } catch {
      // pg_ctl failed or timed out: fall back to the postmaster's PID.
    }
    if (current !== undefined && isAlive(current)) await stopPid(current)
    pid = undefined
  }
  await start()
  return {
    port,
    dir,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    createDatabase: async (name) => {
      await psql(port, `create database "${name}"`)
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    stop,
    start,
    dispose: async () => {
      await stop("fast")
      Fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
