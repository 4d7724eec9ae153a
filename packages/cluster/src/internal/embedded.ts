import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/**
 * A PostgreSQL server kept in a directory and run by the process that uses it: `initdb` the first
 * time, `pg_ctl start` on a Unix socket in that directory (no TCP port, so nothing to collide with),
 * `pg_ctl stop` when the scope closes. A server left running by a process that was killed is reused.
 * Needs the PostgreSQL server binaries (Debian: `postgresql`); as root, it runs them as `postgres`.
 */
export const start = (dir: string): Effect.Effect<string, string, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const bin = findBin()
        const root = Path.resolve(dir)
        // The directory holds the socket and the server's log: this user's alone, so that a server an
        // older version left running with a socket anyone could open (0777) is out of reach too.
        Fs.mkdirSync(root, { recursive: true, mode: 0o700 })
        Fs.chmodSync(root, 0o700)
        const asRoot = process.getuid?.() === 0
        if (asRoot) ChildProcess.execFileSync("chown", ["postgres", root])
        const data = Path.join(root, "data")
        if (!Fs.existsSync(Path.join(data, "PG_VERSION"))) {
          await run(asRoot, `${bin}/initdb -D '${data}' -A trust -U postgres >/dev/null`)
        }
        if (!running(data)) {
          // The server trusts whoever reaches its socket (no password): PostgreSQL's default mode,
          // 0777, let every local user in as its superuser, to the stored items and outcomes.
          await run(
            asRoot,
            `${bin}/pg_ctl -D '${data}' -w -t 60 -o "-c listen_addresses='' -k '${root}' -c unix_socket_permissions=0700" -l '${root}/postgres.log' start >/dev/null`
          )
        }
        return { bin, data, socket: Path.join(root, ".s.PGSQL.5432"), asRoot }
      },
      catch: (error) => (error instanceof Error ? error.message : String(error))
    }),
    (server) =>
      Effect.promise(() =>
        run(server.asRoot, `${server.bin}/pg_ctl -D '${server.data}' -m fast -w -t 30 stop >/dev/null`)
      ).pipe(Effect.ignore)
  ).pipe(Effect.map((server) => server.socket))

const findBin = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = Fs.existsSync(root) ? Fs.readdirSync(root).sort((a, b) => Number(b) - Number(a)) : []
  const found = versions.find((version) => Fs.existsSync(Path.join(root, version, "bin", "initdb")))
  if (found === undefined) {
    throw new Error("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb): install the postgresql package")
  }
  return Path.join(root, found, "bin")
}

// PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
const run = (asRoot: boolean, command: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const [file, args] = asRoot ? ["su", ["postgres", "-s", "/bin/sh", "-c", command]] : ["/bin/sh", ["-c", command]]
    ChildProcess.execFile(file, args as Array<string>, { timeout: 90_000 }, (error, _stdout, stderr) =>
      error === null ? resolve() : reject(new Error(`${command.split(" ")[0]} failed: ${stderr || error.message}`))
    )
  })

// A postmaster.pid whose process is alive: a server an earlier, killed process left running.
const running = (data: string): boolean => {
  try {
    const pid = Number(Fs.readFileSync(Path.join(data, "postmaster.pid"), "utf8").split("\n")[0])
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
