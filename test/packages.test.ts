// The packages as a consumer gets them: packed tarballs installed into a project outside the
// workspace, a program run on them with and without `--conditions=source` (a common monorepo setting).
import { execFileSync, spawnSync } from "node:child_process"
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"

const root = new URL("..", import.meta.url).pathname
const versions = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).devDependencies as Record<string, string>
const dir = mkdtempSync(join(tmpdir(), "volley-consumer-"))
const tarballs = { core: join(dir, "volley-core-0.1.0.tgz"), node: join(dir, "volley-node-0.1.0.tgz") }

// Without the test run's NODE_OPTIONS (--conditions=@volley/source): a consumer has no such setting.
const env = { ...process.env, NODE_OPTIONS: "" }
const run = (args: ReadonlyArray<string>) =>
  spawnSync(process.execPath, args, { cwd: dir, env, encoding: "utf8", timeout: 30_000 })

beforeAll(() => {
  for (const name of ["core", "node"]) {
    execFileSync("pnpm", ["pack", "--pack-destination", dir], { cwd: join(root, "packages", name), stdio: "ignore" })
  }
  cpSync(new URL("./fixtures/consumer", import.meta.url), dir, { recursive: true })
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({
      name: "volley-consumer",
      private: true,
      type: "module",
      dependencies: {
        "@volley/core": `file:${tarballs.core}`,
        "@volley/node": `file:${tarballs.node}`,
        effect: versions.effect,
        "@effect/platform-node": versions["@effect/platform-node"]
      },
      // @volley/node asks for @volley/core ^0.1.0: take it from the tarball, never from the registry.
      pnpm: { overrides: { "@volley/core": `file:${tarballs.core}` } }
    })
  )
  execFileSync("pnpm", ["install", "--prefer-offline", "--no-frozen-lockfile"], { cwd: dir, stdio: "ignore" })
}, 120_000)

afterAll(() => rmSync(dir, { recursive: true, force: true }))

const expected = { text: "hello /one", batch: ["hello /a", "hello /b"], loud: "HELLO /ONE" }

describe("packed packages", () => {
  it("ship a LICENSE and a README, and no tests", () => {
    for (const tarball of Object.values(tarballs)) {
      const files = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).split("\n")
      assert.include(files, "package/LICENSE")
      assert.include(files, "package/README.md")
      assert.isFalse(files.some((file) => file.includes(".test.")))
    }
  })

  it("run a consumer's program (barrel and subpath imports, HTTP, a worker task)", () => {
    const result = run(["main.mjs"])
    assert.strictEqual(result.status, 0, result.stderr)
    assert.deepStrictEqual(JSON.parse(result.stdout), expected)
  })

  it("run the same program with --conditions=source, which must not reach their TypeScript sources", () => {
    const result = run(["--conditions=source", "main.mjs"])
    assert.strictEqual(result.status, 0, result.stderr)
    assert.deepStrictEqual(JSON.parse(result.stdout), expected)
  })

  it("do not export their internal modules", () => {
    const result = run(["--input-type=module", "-e", 'import "@volley/core/internal/retry/budget"'])
    assert.include(result.stderr, "ERR_PACKAGE_PATH_NOT_EXPORTED")
  })

  it("declare their types with exported modules only (no import of another package's internal/)", () => {
    // Such an import cannot be resolved by a consumer ("./internal/*" is not exported): with
    // skipLibCheck the type silently became `any`, without it the consumer did not compile.
    for (const tarball of Object.values(tarballs)) {
      const declarations = execFileSync("tar", ["-xzOf", tarball, "--wildcards", "package/dist/*.d.ts"], {
        encoding: "utf8",
        maxBuffer: 64 * 1024 * 1024
      })
      assert.notMatch(declarations, /["']@volley\/[a-z]+\/internal\//, tarball)
    }
  })

  it("fail at once with the required version when @volley/node is imported on Node < 22.19", () => {
    const oldNode = 'Object.defineProperty(process.versions, "node", { value: "20.20.2" })'
    const result = run(["--input-type=module", "-e", `${oldNode}; await import("@volley/node")`])
    assert.notStrictEqual(result.status, 0)
    assert.include(result.stderr, "@volley/node needs Node.js >= 22.19")
  })
})
