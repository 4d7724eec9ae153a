"""aiohttp: one ClientSession, a connector capped at the concurrency."""
import aiohttp

from common import main


async def make(concurrency):
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def fetch(url):
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.read()

    return fetch, session.close


main(make)
