import * as Net from "node:net"
import * as Path from "node:path"
import * as Util from "node:util"
import { ClusterRunner } from "@volley/cluster"
import { NodeHttpClient } from "@volley/node"
import { Cause, type Duration, Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { freePort } from "./support/ports.ts"
import { type Postgres, startPostgres } from "./support/postgres.ts"
import { spawnNode } from "./support/processes.ts"

let postgres: Postgres
let url: string

beforeAll(async () => {
  postgres = await startPostgres()
  url = await postgres.createDatabase("volley")
}, 60_000)

afterAll(() => postgres?.dispose(), 30_000)

/** Every way a start-up error gets shown, for checking that a secret is in none of them. */
const shown = (error: unknown): string =>
  [
    String(error),
    (error as Error).message,
    Util.inspect(error, { depth: Number.POSITIVE_INFINITY, showHidden: true }),
    Cause.pretty(Cause.fail(error)),
    Cause.pretty(Cause.die(error))
  ].join("\n")

/** Builds a layer and returns how it failed and how long that took. */
const startFailure = async <A, E>(layer: Layer.Layer<A, E>) => {
  const started = Date.now()
  const error = await Effect.runPromise(Effect.flip(Effect.scoped(Layer.build(layer))))
  return { error, millis: Date.now() - started }
}

describe("ClusterRunner", () => {
  describe("layerClient", () => {
    it("fails with DatabaseUnreachable naming the address, within connectTimeout and a few seconds", async () => {
      const closed = await freePort()
      const { error, millis } = await startFailure(
        ClusterRunner.layerClient({
          database: { url: `postgres://postgres:secret@127.0.0.1:${closed}/volley`, connectTimeout: "2 seconds" }
        })
      )
      assert.strictEqual(error._tag, "ClusterStartError")
      assert.strictEqual(error.reason, "DatabaseUnreachable")
      assert.include(error.message, `127.0.0.1:${closed}/volley`)
      assert.notInclude(shown(error), "secret")
      assert.isBelow(millis, 8_000)
    }, 30_000)

    it("fails with InvalidOptions for a malformed database URL, with its password in no part of the error", async () => {
      // Port 99999 makes Node's URL parser throw a TypeError whose `input` is the whole URL: it must
      // never reach the error (it did, as the cause of the driver's error).
      for (const url of [
        "postgres://volley:s3cretpw@127.0.0.1:99999/volley",
        Redacted.make("postgres://volley:s3cretpw@127.0.0.1:99999/volley"),
        "postgres://volley:s3cretpw%zz@127.0.0.1:5432/volley"
      ]) {
        const { error } = await startFailure(
          ClusterRunner.layerClient({ database: { url, connectTimeout: "2 seconds" } })
        )
        assert.strictEqual(error.reason, "InvalidOptions")
        assert.include(error.message, "database.url")
        assert.notInclude(shown(error), "s3cretpw")
      }
      const { error } = await startFailure(ClusterRunner.layerClient({ database: { url: "mysql://127.0.0.1/volley" } }))
      assert.strictEqual(error.reason, "InvalidOptions")
      assert.include(error.message, "mysql:")
    }, 30_000)
  })

  describe("layer", () => {
    it("fails with PortInUse naming the address when the runner's port is taken", async () => {
      const port = await freePort()
      const squatter = Net.createServer()
      await new Promise<void>((resolve) => squatter.listen(port, "127.0.0.1", resolve))
      try {
        const runner = ClusterRunner.layer({ port, database: { url }, timings: "fast" }).pipe(
          Layer.provide(NodeHttpClient.layer())
        )
        const { error, millis } = await startFailure(runner)
        assert.strictEqual(error.reason, "PortInUse")
        assert.include(error.message, `127.0.0.1:${port}`)
        assert.isBelow(millis, 15_000)
      } finally {
        squatter.close()
      }
    }, 30_000)

    it("fails with InvalidOptions for a port out of range or a concurrency of 0", async () => {
      const badPort = await startFailure(
        ClusterRunner.layer({ port: 70_000, database: { url } }).pipe(Layer.provide(NodeHttpClient.layer()))
      )
      assert.strictEqual(badPort.error.reason, "InvalidOptions")
      assert.include(badPort.error.message, "70000")
      const badConcurrency = await startFailure(
        ClusterRunner.layer({ port: 20_000, concurrency: 0, database: { url } }).pipe(
          Layer.provide(NodeHttpClient.layer())
        )
      )
      assert.include(badConcurrency.error.message, "concurrency must be an integer >= 1, got 0")
      const badUrl = await startFailure(
        ClusterRunner.layer({
          port: 20_000,
          database: { url: "postgres://volley:s3cretpw@127.0.0.1:99999/volley" }
        }).pipe(Layer.provide(NodeHttpClient.layer()))
      )
      assert.strictEqual(badUrl.error.reason, "InvalidOptions")
      assert.notInclude(shown(badUrl.error), "s3cretpw")
    })

    it("fails with InvalidOptions for a retention, connect timeout, pool size, host or timings it cannot use", async () => {
      // Before: a retention that is not a duration threw from ClusterRunner.layer itself, a negative
      // one deleted finished jobs at once, maxConnections 0 waited for good, a connect timeout that
      // is not a duration died, a bad host read as a port in use, unknown timings were ignored.
      const cases: ReadonlyArray<readonly [Partial<ClusterRunner.Options>, string]> = [
        [{ retention: "banana" as Duration.Input }, 'retention must be a duration of at least 0 ms, got "banana"'],
        [{ retention: -5 }, "retention must be a duration of at least 0 ms, got -5"],
        [{ retention: -1n }, "retention must be a duration of at least 0 ms, got -1n"],
        [{ database: { url, maxConnections: 0 } }, "database.maxConnections must be an integer >= 1, got 0"],
        [
          { database: { url, connectTimeout: "soon" as Duration.Input } },
          "database.connectTimeout must be a finite duration of at least 1 ms"
        ],
        [{ host: "not a host!!" }, "host must be a host name or an IP address"],
        [{ timings: "slow" as ClusterRunner.Timings }, 'timings must be "default" or "fast", got "slow"']
      ]
      for (const [options, message] of cases) {
        const failed = await startFailure(
          ClusterRunner.layer({ port: 20_000, database: { url }, ...options }).pipe(
            Layer.provide(NodeHttpClient.layer())
          )
        )
        assert.strictEqual(failed.error.reason, "InvalidOptions", message)
        assert.include(failed.error.message, message)
      }
    })

    it("ignores stray PORT and HOST variables: the runner joins on the address it was given", async () => {
      const port = await freePort()
      const runner = spawnNode(Path.join(import.meta.dirname, "fixtures", "runner.ts"), [String(port), url], {
        PORT: "abc",
        HOST: "not-a-host.invalid"
      })
      try {
        await runner.waitFor(`runner ready ${port}`, 60_000)
        const rows = await Effect.runPromise(
          Effect.flatMap(
            SqlClient.SqlClient,
            (sql) => sql<{ address: string }>`select address from cluster_runners`
          ).pipe(Effect.provide(ClusterRunner.layerClient({ database: { url } })))
        )
        assert.include(
          rows.map((row) => row.address),
          `127.0.0.1:${port}`
        )
      } finally {
        await runner.stop()
      }
    }, 60_000)
  })
})
