"""Per-request cost of the gateway's HTTP limits: uvicorn's httptools protocol with and without.

One kept-alive connection per protocol, a transport that drops what it is given, and an ASGI
app that answers at once: a request is the protocol's parsing, its ASGI task and the answer's
bytes, with no socket. The gateway's protocol (``gateway.limits``, default limits) runs the
same requests; the difference is what its checks cost the hot path.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench.micro_breaker import time_path
from gateway.limits import limited_protocol
from gateway.settings import GatewaySettings

# An API client's request: a request line and ten headers, about 600 bytes.
_HEADERS = (
    b"Host: api.mercato.example\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\r\n"
    b"X-Request-Id: 6f1c2a4e9b8d4f0a8c3e5b7d9f1a2c4e\r\n"
    b"Connection: keep-alive\r\n"
    b"Sec-Fetch-Mode: cors\r\n"
)
REQUESTS = {
    "get": b"GET /api/v1/orders/42?expand=lines HTTP/1.1\r\n" + _HEADERS + b"\r\n",
    "post": (
        b"POST /api/v1/orders HTTP/1.1\r\n"
        + _HEADERS
        + b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
        + b'{"lines": [{"sku": "MUG-BLUE", "quantity": 2}], "note": "'
        + b"x" * 141
        + b'"}'
    ),
}


class _NullTransport(asyncio.Transport):
    """Accepts writes and drops them; reports a loopback peer."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = False
        self._extra = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview[int]) -> None:
        pass

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _connection(protocol_class: type[HttpToolsProtocol]) -> HttpToolsProtocol:
    config = Config(app=_answer, http=protocol_class, lifespan="off", log_config=None)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    protocol.connection_made(_NullTransport())
    return protocol


async def measure() -> dict[str, Any]:
    """Nanoseconds per request through each protocol, and what the limits add."""
    counter = Counter("bench_refusals", "unused", ["reason"], registry=CollectorRegistry())
    protocols: dict[str, type[HttpToolsProtocol]] = {
        "uvicorn": HttpToolsProtocol,
        "limited": limited_protocol(GatewaySettings(), counter),
    }
    results: dict[str, Any] = {}
    for kind, data in REQUESTS.items():
        for name, protocol_class in protocols.items():
            protocol = _connection(protocol_class)

            async def one_request(
                protocol: HttpToolsProtocol = protocol, data: bytes = data
            ) -> None:
                protocol.data_received(data)
                # The request's task answers, then its done-callback runs.
                await asyncio.sleep(0)
                await asyncio.sleep(0)

            results[f"{kind}_{name}"] = await time_path(one_request)
            protocol.connection_lost(None)
        stock = results[f"{kind}_uvicorn"]["ns_per_call"]
        limited = results[f"{kind}_limited"]["ns_per_call"]
        results[f"{kind}_overhead_ns"] = round(limited - stock, 1)
        print(
            f"  {kind.upper():4} uvicorn {stock:8.0f} ns/request, with the limits {limited:8.0f} "
            f"(+{limited - stock:.0f} ns)",
            flush=True,
        )
    return results
