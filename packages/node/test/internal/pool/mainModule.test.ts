import { execFile } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"

const fixture = new URL("../../fixtures/taskInEntry.ts", import.meta.url).pathname

const runFixture = (starts: string) =>
  Effect.promise(
    () =>
      new Promise<string>((resolve, reject) =>
        execFile(
          process.execPath,
          ["--conditions=@volley/source", fixture, starts],
          { timeout: 20_000 },
          (error, stdout) => (error ? reject(error) : resolve(stdout))
        )
      )
  )

describe("pool entry module", () => {
  it.live(
    "fails a task defined in the program's entry module with TaskNotFoundError; no thread re-runs the program",
    () =>
      Effect.acquireUseRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "volley-entry-"))),
        (dir) =>
          Effect.gen(function* () {
            const outcome = JSON.parse(yield* runFixture(join(dir, "starts"))) as { error?: string; message?: string }
            assert.strictEqual(outcome.error, "TaskNotFoundError")
            assert.include(outcome.message, "entry module")
            assert.include(outcome.message, "module of its own")
            assert.strictEqual(readFileSync(join(dir, "starts"), "utf8"), "start\n", "the program ran once")
          }),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )
  )
})
