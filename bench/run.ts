// `pnpm bench [filter] [args...]`: runs every scenario folder (bench/<scenario>/main.ts) whose name
// is or contains the filter, one at a time, each in its own Node process so that one scenario's
// threads, sockets and heap never skew the next. Results land in bench/results/.
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"

const here = import.meta.dirname
// `pnpm bench blocking piscina volley-runall`: the words after the filter go to the scenario.
const [filter = "", ...rest] = process.argv.slice(2)
const all = readdirSync(here, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(here, d.name, "main.ts")))
  .map((d) => d.name)
  .sort()
// A scenario's exact name runs that one only (`http` is not also `http2`).
const scenarios = all.includes(filter) ? [filter] : all.filter((name) => name.includes(filter))
if (scenarios.length === 0) {
  console.error(`no benchmark scenario matches "${filter}"`)
  process.exit(1)
}
for (const scenario of scenarios) {
  console.log(`\n=== ${scenario} ===`)
  const run = spawnSync(
    process.execPath,
    ["--conditions=@volley/source", "--expose-gc", join(here, scenario, "main.ts"), ...rest],
    {
      stdio: "inherit",
      cwd: here
    }
  )
  if (run.status !== 0) process.exit(run.status ?? 1)
}
