import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { runFixture } from "../../fixtures/run.ts"

describe("dispatch", () => {
  it.live("responses ended together each reach their fiber, even when one fiber's observer throws", () =>
    runFixture("throwingObserver.ts").pipe(
      Effect.map((stdout) =>
        // The throw still reaches the process, as it did when each response had its own immediate.
        assert.deepStrictEqual(JSON.parse(stdout), ["second: Success", "uncaught: the first observer threw"])
      )
    )
  )
})
