import { execFile } from "node:child_process"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"

describe("dispatch", () => {
  it.live("responses ended together each reach their fiber, even when one fiber's observer throws", () =>
    Effect.promise(
      () =>
        new Promise<string>((resolve, reject) =>
          execFile(
            process.execPath,
            ["--conditions=@volley/source", new URL("../../fixtures/throwingObserver.ts", import.meta.url).pathname],
            { timeout: 20_000 },
            (error, stdout) => (error ? reject(error) : resolve(stdout))
          )
        )
    ).pipe(
      Effect.map((stdout) =>
        // The throw still reaches the process, as it did when each response had its own immediate.
        assert.deepStrictEqual(JSON.parse(stdout), ["second: Success", "uncaught: the first observer threw"])
      )
    )
  )
})
