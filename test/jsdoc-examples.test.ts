// The JSDoc `@example` of every public export compiles against the real API (scripts/check-examples.ts),
// and the check itself rejects a broken example and a missing one, at the line they are on.
import { spawnSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"

const root = new URL("..", import.meta.url).pathname
const fixture = "test/fixtures/jsdoc-examples/Broken.ts"

const runCheck = (...args: ReadonlyArray<string>) => {
  const run = spawnSync(process.execPath, ["--conditions=@volley/source", "scripts/check-examples.ts", ...args], {
    cwd: root,
    encoding: "utf8",
    timeout: 120_000
  })
  return { code: run.status, output: `${run.stdout}${run.stderr}` }
}

describe("JSDoc examples", () => {
  // Found by review: examples in src/internal/ were never compiled, though public modules re-export
  // what they document (`Options.record`'s passed `null` where its type takes an object): every
  // `@example` under src/ is counted.
  it("compile, for every public export and what public modules re-export", { timeout: 120_000 }, () => {
    const documented = ["core", "node", "cluster"].flatMap((pkg) => {
      const src = join(root, "packages", pkg, "src")
      return (readdirSync(src, { recursive: true }) as Array<string>)
        .filter((f) => f.endsWith(".ts"))
        .flatMap((f) => readFileSync(join(src, f), "utf8").match(/^\s*\* @example$/gm) ?? [])
    })
    const { code, output } = runCheck()
    assert.strictEqual(code, 0, output)
    assert.match(
      output,
      new RegExp(`^${documented.length} examples, 0 compile errors, 0 exports without @example`, "m"),
      output
    )
  })

  it("are rejected when one does not compile or is missing, at its JSDoc line", { timeout: 60_000 }, () => {
    const { code, output } = runCheck(fixture)
    assert.strictEqual(code, 1, output)
    assert.include(output, `${fixture}:12:7: error TS2322: Type 'string' is not assignable to type 'number'.`)
    assert.include(output, `${fixture}:24: export half has no @example`)
    assert.include(output, `${fixture}:34: export triple has no @example`, "prose is not an example")
    assert.include(output, "1 examples, 1 compile errors, 2 exports without @example")
  })
})
