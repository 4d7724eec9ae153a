import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"

const fixture = new URL("../../fixtures/taskInEntry.ts", import.meta.url).pathname
// The same program started as a directory (`node dir`: package.json's main), as Node allows.
const fixtureDir = new URL("../../fixtures/entryDir", import.meta.url).pathname

const runFixture = (entry: string, starts: string) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve, reject) =>
        execFile(
          process.execPath,
          ["--conditions=@volley/source", entry, starts],
          { timeout: 20_000 },
          (error, stdout) => (error ? reject(error) : resolve(stdout))
        )
      )
  )

describe("pool entry module", () => {
  it.live("fails a task defined in the entry module (a file or a directory) with TaskNotFoundError, run once", () =>
    Effect.acquireUseRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "volley-entry-"))),
      (dir) =>
        Effect.gen(function* () {
          for (const [i, entry] of [fixture, fixtureDir].entries()) {
            const starts = join(dir, `starts-${i}`)
            const outcome = JSON.parse(yield* runFixture(entry, starts)) as { error?: string; message?: string }
            assert.strictEqual(outcome.error, "TaskNotFoundError", entry)
            assert.include(outcome.message, "entry module")
            assert.include(outcome.message, "module of its own")
            assert.strictEqual(readFileSync(starts, "utf8"), "start\n", `the program ran once: ${entry}`)
          }
        }),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
  )
})
