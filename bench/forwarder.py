"""A bare ASGI forwarder: the least a Python proxy on a given server and client can cost.

It passes every request to one upstream and its answer back, with the header handling every
proxy needs (hop-by-hop headers dropped, the upstream's framing replaced by the server's)
and nothing else: no routing, access rules, breaker, metrics or log line. Measured under the
same load as the gateway, the difference of two servers or two clients here is what that
lever can buy the gateway at most (bench/gateway.py, "levers").

``python -m bench.forwarder`` serves it; FORWARD_SERVER (uvicorn or granian), FORWARD_CLIENT
(aiohttp or httpx), FORWARD_UPSTREAM (a base URL) and FORWARD_PORT choose what.
"""

from __future__ import annotations

import os
from typing import Protocol

from gateway.asgi import Receive, Scope, Send
from gateway.proxy import HOP_BY_HOP

SERVERS = ("uvicorn", "granian")
CLIENTS = ("aiohttp", "httpx")
# The gateway's hop-by-hop names, and the two the forwarder sets itself: the upstream's Host
# (the client's own) and the answer's length (the server frames the body it is given).
_NOT_FORWARDED = frozenset(name.encode() for name in HOP_BY_HOP | {"host", "content-length"})
POOL_SIZE = 100


class Client(Protocol):
    async def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]: ...

    async def close(self) -> None: ...


class AiohttpClient:
    """aiohttp set up for a proxy: no cookie jar, no decompression, no added headers."""

    def __init__(self, base: str) -> None:
        import aiohttp

        self._base = base
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_SIZE, ttl_dns_cache=None),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )

    async def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        async with self._session.request(
            method, self._base + path, headers=headers, data=body or None, allow_redirects=False
        ) as response:
            content = await response.read()
            raw = [
                (k.lower(), v) for k, v in response.raw_headers if k.lower() not in _NOT_FORWARDED
            ]
            return response.status, raw, content

    async def close(self) -> None:
        await self._session.close()


class HttpxClient:
    """httpx's pooled async client, HTTP/1.1, the same pool size."""

    def __init__(self, base: str) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=base,
            limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
            follow_redirects=False,
        )

    async def forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        response = await self._client.request(method, path, headers=headers, content=body)
        raw = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _NOT_FORWARDED]
        return response.status_code, raw, response.content

    async def close(self) -> None:
        await self._client.aclose()


def _client(name: str, base: str) -> Client:
    if name == "aiohttp":
        return AiohttpClient(base)
    if name == "httpx":
        return HttpxClient(base)
    raise SystemExit(f"FORWARD_CLIENT must be one of {CLIENTS}, not {name!r}")


class Forwarder:
    """The ASGI app; its client is made on the first request, inside the server's loop."""

    def __init__(self, client: str, upstream: str) -> None:
        self._name, self._upstream = client, upstream
        self._client: Client | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if self._client is None:
            self._client = _client(self._name, self._upstream)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k not in _NOT_FORWARDED
        ]
        path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode("latin-1")
        status, answer, content = await self._client.forward(scope["method"], path, headers, body)
        answer.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": content})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


app = Forwarder(
    os.environ.get("FORWARD_CLIENT", "aiohttp"),
    os.environ.get("FORWARD_UPSTREAM", "http://127.0.0.1:8080"),
)


def main() -> None:
    server, port = os.environ.get("FORWARD_SERVER", "uvicorn"), int(os.environ["FORWARD_PORT"])
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            app,
            host="127.0.0.1",
            port=port,
            http="httptools",
            loop="uvloop",
            access_log=False,
            log_level="warning",
        )
    elif server == "granian":
        from granian.constants import Interfaces, Loops
        from granian.server import Server

        # One worker process with one runtime thread: one core's worth, as uvicorn's loop.
        Server(
            "bench.forwarder:app",
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            runtime_threads=1,
            loop=Loops.uvloop,
            log_access=False,
        ).serve()
    else:
        raise SystemExit(f"FORWARD_SERVER must be one of {SERVERS}, not {server!r}")


if __name__ == "__main__":
    main()
