// The scheduler's origin keys: a URL that starts like the last origin seen but names another
// (a longer host, a port, user info, another case) gets its own host and limit.
import { assert, describe, it } from "@effect/vitest"
import { DONE, type Job, Scheduler, WAIT } from "../../src/internal/fanout/scheduler.ts"

const hostsOf = (urls: ReadonlyArray<string>) => {
  const scheduler = new Scheduler(urls[Symbol.iterator](), {
    perHost: 100,
    adaptive: undefined,
    window: Number.POSITIVE_INFINITY,
    ordered: false,
    lookahead: 1024
  })
  const jobs: Array<Job> = []
  for (;;) {
    const next = scheduler.next()
    if (next === DONE || next === WAIT) break
    jobs.push(next)
  }
  return { jobs, keys: [...scheduler.hosts.keys()] }
}

describe("Scheduler origins", () => {
  it("shares a host only between spellings of one origin", () => {
    const { jobs, keys } = hostsOf([
      "http://a.test/1",
      "http://a.test?q",
      "http://a.test",
      "http://A.test:80/2",
      "http://a.test.b/3",
      "http://a.test:8080/4",
      "http://u@a.test/5",
      "http://a.test@b.test/6"
    ])
    assert.deepStrictEqual(keys, ["http://a.test", "http://a.test.b", "http://a.test:8080", "http://b.test"])
    const a = jobs[0]!.host
    assert.deepStrictEqual(
      jobs.map((job) => job.host === a),
      [true, true, true, true, false, false, true, false]
    )
  })

  it("keeps an origin's queue bounded while it always has a backlog, in input order", () => {
    const total = 50_000
    const urls = Array.from({ length: total }, (_, i) => `http://a.test/${i}`)
    const scheduler = new Scheduler(urls[Symbol.iterator](), {
      perHost: 2,
      adaptive: undefined,
      window: Number.POSITIVE_INFINITY,
      ordered: false,
      lookahead: 1024
    })
    const running: Array<Job> = []
    let started = 0
    let longest = 0
    for (;;) {
      const next = scheduler.next()
      if (next === DONE) break
      if (next === WAIT) {
        // Both slots taken: the oldest request finishes, and the next one starts.
        scheduler.finish(running.shift()!)
        continue
      }
      assert.strictEqual(next.index, started++)
      running.push(next)
      longest = Math.max(longest, scheduler.hosts.get("http://a.test")!.queue.length)
    }
    assert.strictEqual(started, total)
    assert.isAtMost(longest, 2 * 1024 + 1)
  })
})
