"""The benchmark's bare forwarder passes requests and answers through with either client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from bench.forwarder import CLIENTS, Forwarder


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        response = web.StreamResponse(
            status=201, headers={"X-Seen-Path": request.path_qs, "X-Seen-Body": body.decode()}
        )
        response.headers["X-Seen-Host"] = request.headers.get("Host", "")
        response.headers["X-Seen-Keep-Alive"] = request.headers.get("Keep-Alive", "none")
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"ok":')
        await response.write(b"true}")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_request_and_its_answer_pass_through_without_hop_by_hop_headers(upstream, client):
    forwarder = Forwarder(client, upstream)
    transport = httpx.ASGITransport(app=forwarder)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.post(
                "/open/item?a=1&b=two",
                content=b"hello",
                headers={"Connection": "keep-alive", "Keep-Alive": "timeout=5"},
            )
    finally:
        await forwarder.close()
    assert response.status_code == 201
    assert response.content == b'{"ok":true}'
    assert response.headers["x-seen-path"] == "/open/item?a=1&b=two"
    assert response.headers["x-seen-body"] == "hello"
    # The caller's Host and hop-by-hop headers stay with the caller.
    assert response.headers["x-seen-host"] == upstream.removeprefix("http://")
    assert response.headers["x-seen-keep-alive"] == "none"
    # The upstream's chunked framing is replaced by the forwarder's own length.
    assert "transfer-encoding" not in response.headers
    assert response.headers["content-length"] == str(len(b'{"ok":true}'))
