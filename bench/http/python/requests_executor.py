"""The article's approach: blocking requests in loop.run_in_executor, one thread per slot.

Each executor thread keeps its own requests.Session, so connections are kept alive
(a bare requests.get opens a new connection per call).
"""
import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from common import main

local = threading.local()


def get(url):
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = requests.Session()
    response = session.get(url)
    response.raise_for_status()
    return response.content


async def make(concurrency):
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=concurrency)

    async def fetch(url):
        return await loop.run_in_executor(executor, get, url)

    async def close():
        executor.shutdown()

    return fetch, close


main(make)
