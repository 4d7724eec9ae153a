// The scheduler's origin keys: a URL that starts like the last origin seen but names another
// (a longer host, a port, user info, another case) gets its own host and limit.
import { assert, describe, it } from "@effect/vitest"
import type { Config as AdaptiveConfig } from "../../src/internal/fanout/adaptive.ts"
import { DONE, type Job, MAX_IDLE_ORIGINS, Scheduler, WAIT } from "../../src/internal/fanout/scheduler.ts"

/** A batch's scheduler over `urls`: a fixed `perHost`, or an adaptive one. */
const schedulerOf = (urls: Iterable<string>, limit: number | AdaptiveConfig) =>
  new Scheduler(urls[Symbol.iterator](), {
    perHost: typeof limit === "number" ? limit : undefined,
    adaptive: typeof limit === "number" ? undefined : limit,
    window: Number.POSITIVE_INFINITY,
    ordered: false,
    lookahead: 1024
  })

const hostsOf = (urls: ReadonlyArray<string>) => {
  const scheduler = schedulerOf(urls, 100)
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
    const scheduler = schedulerOf(urls, 2)
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

  // A crawler's stream meets each of millions of origins once or a few times: the batch must not
  // keep a host for each (a fixed perHost's was 190 bytes, an adaptive one's 830).
  describe("forgets idle origins, so an endless input of origins keeps a bounded state", () => {
    /** Runs `urls` with `concurrency` requests in flight, finishing the oldest (or the newest) first. */
    const run = (
      urls: Iterable<string>,
      adaptive: AdaptiveConfig | undefined,
      concurrency: number,
      finishing: "oldest" | "newest" = "oldest"
    ) => {
      const scheduler = schedulerOf(urls, adaptive ?? 2)
      const running: Array<Job> = []
      let started = 0
      let most = 0
      for (;;) {
        const next = running.length < concurrency ? scheduler.next() : WAIT
        if (next === DONE) break
        if (next === WAIT) {
          scheduler.finish((finishing === "oldest" ? running.shift() : running.pop())!)
          continue
        }
        started++
        running.push(next)
        most = Math.max(most, scheduler.hosts.size)
      }
      for (const job of running) scheduler.finish(job)
      return { scheduler, started, most }
    }
    const origins = function* (count: number) {
      for (let i = 0; i < count; i++) yield `http://host-${i}.test/`
    }

    it("with a fixed perHost, keeps only the origins with requests in flight or queued", () => {
      const { scheduler, started, most } = run(origins(20_000), undefined, 8)
      assert.strictEqual(started, 20_000)
      // And the last origin met, kept for the next request.
      assert.isAtMost(most, 8 + 1)
      assert.isAtMost(scheduler.hosts.size, 1)
    })

    it("with a fixed perHost, forgets an origin that went idle while it was the last one met", () => {
      // One request at a time (or the newest finishing first): each origin goes idle before
      // the next is read, while it is still the last one met.
      for (const concurrency of [1, 8]) {
        const { started, most } = run(origins(20_000), undefined, concurrency, "newest")
        assert.strictEqual(started, 20_000)
        assert.isAtMost(most, concurrency + 1, `concurrency ${concurrency}`)
      }
    })

    it("with a fixed perHost, still holds a busy origin to its limit", () => {
      // Each origin is met in turns (a, a, a, b, a, a, ...): forgotten in between, never over 2.
      const urls = Array.from({ length: 3_000 }, (_, i) => `http://${i % 4 === 3 ? `b-${i}` : "a"}.test/${i}`)
      const scheduler = schedulerOf(urls, 2)
      const running: Array<Job> = []
      let started = 0
      for (;;) {
        const next = running.length < 8 ? scheduler.next() : WAIT
        if (next === DONE) break
        if (next === WAIT) {
          scheduler.finish(running.shift()!)
          continue
        }
        started++
        running.push(next)
        // By URL, not by host object: a second host for one origin would double its limit.
        const origin = new URL(next.request.url).host
        assert.isAtMost(running.filter((job) => new URL(job.request.url).host === origin).length, 2)
      }
      assert.strictEqual(started, 3_000)
    })

    it("with an adaptive perHost, does not look at every paused origin each time one goes idle", () => {
      // A crawler whose origins answer 429 with Retry-After: half of them stay paused (kept).
      const config: AdaptiveConfig = { initial: 4, min: 1, max: 64 }
      const scheduler = schedulerOf(origins(20_000), config)
      scheduler.now = () => 0
      let looks = 0
      let paused = 0
      const finish = (job: Job) => {
        const host = job.host!
        if (job.index % 2 === 0) {
          scheduler.pause(host, 60_000)
          paused++
        }
        const pausedAt = host.paused.bind(host)
        host.paused = (now) => {
          looks++
          return pausedAt(now)
        }
        scheduler.finish(job)
      }
      const running: Array<Job> = []
      let started = 0
      for (;;) {
        const next = running.length < 8 ? scheduler.next() : WAIT
        if (next === DONE) break
        if (next === WAIT) {
          finish(running.shift()!)
          continue
        }
        started++
        running.push(next)
      }
      for (const job of running) finish(job)
      assert.strictEqual(started, 20_000)
      // Each paused origin is kept until its pause ends (and a bounded number of others), and
      // looked at a few times, not once for each origin that went idle after it.
      assert.isAtLeast(scheduler.hosts.size, paused)
      assert.isAtMost(scheduler.hosts.size, paused + 2 * MAX_IDLE_ORIGINS)
      assert.isBelow(looks, 20_000 * 8)
    })

    it("with an adaptive perHost, keeps the last idle origins' limits, up to a bound", () => {
      const config: AdaptiveConfig = { initial: 4, min: 1, max: 64 }
      const { scheduler, started, most } = run(origins(20_000), config, 8)
      assert.strictEqual(started, 20_000)
      assert.isAtMost(most, MAX_IDLE_ORIGINS + 8 + 1)
      assert.isAtMost(scheduler.hosts.size, MAX_IDLE_ORIGINS + 1)
      // The most recent ones are those kept (met again, an origin goes on with its learnt limit).
      const kept = scheduler.hosts.get("http://host-19999.test")
      assert.isDefined(kept)
      assert.isUndefined(scheduler.hosts.get("http://host-0.test"))
    })
  })
})
