// The README is the whole truth: CI runs exactly its two commands, and its smallest example is a real file.
import { readFileSync } from "node:fs"
import { assert, describe, it } from "@effect/vitest"

const read = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), "utf8")

const commandLines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))

const readmeCommands = () => {
  const block = /^```bash\n([\s\S]*?)^```/m.exec(read("README.md"))
  assert.isNotNull(block, "README.md has no ```bash block")
  return commandLines(block?.[1] ?? "")
}

describe("README", () => {
  it("starts with two commands, and .ci/run runs exactly those and nothing else", () => {
    const readme = readmeCommands()
    assert.strictEqual(readme.length, 2, "one command installs and runs the demo, one runs the tests")
    // .ci/run may only add the shell preamble that makes it a script.
    const ci = commandLines(read(".ci/run")).filter((line) => line !== "set -euo pipefail" && !line.startsWith("cd "))
    assert.deepStrictEqual(ci, readme)
  })

  it("has a test command that provisions its servers before anything else", () => {
    const scripts = JSON.parse(read("package.json")).scripts as Record<string, string>
    assert.strictEqual(readmeCommands()[1], "pnpm test")
    assert.match(scripts.test ?? "", /^bash scripts\/provision\.sh && /)
  })
})
