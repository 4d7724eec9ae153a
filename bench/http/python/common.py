"""Shared driver for the python clients: argv is url total concurrency warmup; prints one JSON line."""
import asyncio
import json
import sys
import time


def main(make_client):
    url, total, concurrency, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    async def run():
        fetch, close = await make_client(concurrency)
        counts = {"ok": 0, "failed": 0}

        async def batch(n, deadline):
            # `concurrency` tasks that each take the next request until n or the deadline.
            todo = iter(range(n))

            async def worker():
                for _ in todo:
                    if time.monotonic() >= deadline:
                        return
                    try:
                        await fetch(url)
                        counts["ok"] += 1
                    except Exception:
                        counts["failed"] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

        await batch(warmup, time.monotonic() + 30)
        counts.update(ok=0, failed=0)
        start = time.perf_counter()
        cpu = time.process_time()
        await batch(total, time.monotonic() + 60)
        ms = (time.perf_counter() - start) * 1000
        cpu_us = (time.process_time() - cpu) * 1e6 / max(counts["ok"], 1)
        await close()
        print(json.dumps({**counts, "ms": ms, "cpuUs": cpu_us}))

    asyncio.run(run())
