"""httpx async: one AsyncClient with its pool capped at the concurrency."""
import httpx

from common import main


async def make(concurrency):
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))

    async def fetch(url):
        response = await client.get(url)
        response.raise_for_status()
        return response.content

    return fetch, client.aclose


main(make)
