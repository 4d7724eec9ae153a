import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { type Origin, startOrigins } from "./support/origins.ts"
import { isAlive, spawnNode, stopPid } from "./support/processes.ts"

const entry = Path.join(import.meta.dirname, "fixtures", "embedded.ts")
let origin: Origin
let dir: string

beforeAll(async () => {
  origin = (await startOrigins(1, 20))[0]!
  dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "volley-embedded-"))
})

afterAll(async () => {
  // A server left behind by a failed run: stop it by the PID in its postmaster.pid.
  try {
    const pid = Number(Fs.readFileSync(Path.join(dir, "data", "postmaster.pid"), "utf8").split("\n")[0])
    if (isAlive(pid)) await stopPid(pid, "SIGINT")
  } catch {
    // no server
  }
  Fs.rmSync(dir, { recursive: true, force: true })
  await origin?.close()
}, 30_000)

const progressAtLeast = (output: string, done: number) =>
  [...output.matchAll(/^progress (\d+)$/gm)].some((match) => Number(match[1]) >= done)

describe("ClusterRunner", () => {
  describe("layerEmbedded", () => {
    it("finishes a job after the process is SIGKILLed mid-job and started again, one outcome per item", async () => {
      // A directory others may read, as `mkdir` under the usual umask makes it.
      Fs.chmodSync(dir, 0o755)
      const first = spawnNode(entry, [dir, origin.url, "200"])
      try {
        await first.waitFor("submitted", 60_000)
        // The server trusts whoever reaches its socket (no password): only this user may.
        const socket = Fs.statSync(Path.join(dir, ".s.PGSQL.5432"))
        assert.strictEqual((socket.mode & 0o077).toString(8), "0", `socket mode ${(socket.mode & 0o777).toString(8)}`)
        // ...and the directory holding it and the server's log is this user's alone.
        assert.strictEqual((Fs.statSync(dir).mode & 0o777).toString(8), "700")
        const until = Date.now() + 30_000
        while (!progressAtLeast(first.output(), 40) && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
        assert.isTrue(progressAtLeast(first.output(), 40), first.output())
        assert.notInclude(first.output(), "finished")
      } finally {
        await first.stop("SIGKILL")
      }
      const inFlightAtKill = origin.inFlight()
      const second = spawnNode(entry, [dir, origin.url, "200"])
      try {
        await second.waitFor("finished", 60_000)
        assert.match(second.output(), /^finished 200 outcomes 200 distinct 200$/m)
        assert.strictEqual(await second.exited, 0)
      } finally {
        await second.stop()
      }
      const hits = [...origin.hits.values()]
      assert.strictEqual(hits.length, 200)
      // Re-runs: at most what was in flight (perHost 2) when the process died.
      assert.isAtMost(hits.filter((count) => count > 1).length, Math.max(2, inFlightAtKill))
      // The second process stopped the server it used when it exited.
      const pidFile = Path.join(dir, "data", "postmaster.pid")
      assert.isFalse(Fs.existsSync(pidFile))
    }, 120_000)
  })
})
