"""HTTP/1.1 over raw asyncio streams, for tests that must send what no client library would."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # Whether the server closed the connection after this answer.
    closed: bool = False

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body, checked to be one for this answer's status."""
        assert self.headers["content-type"] == "application/problem+json", self
        body: dict[str, Any] = json.loads(self.body)
        assert body["status"] == self.status
        assert isinstance(body["title"], str)
        assert isinstance(body["type"], str)
        return body


def request(
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    method: str = "GET",
    body: bytes = b"",
) -> bytes:
    """A request's bytes; Content-Length is added when there is a body."""
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: gateway.test",
        *(f"{n}: {v}" for n, v in headers),
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_answer(reader: asyncio.StreamReader, *, within: float = 10.0) -> Answer:
    """One response (Content-Length or chunked body) from ``reader``."""
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                body += (await reader.readexactly(size + 2))[:-2]
            await reader.readuntil(b"\r\n")
        else:
            body = b""
    return Answer(status, headers, body)


async def closed(reader: asyncio.StreamReader, *, within: float = 10.0) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def exchange(port: int, data: bytes, *, within: float = 10.0) -> Answer:
    """Send ``data`` on a new connection; the answer, and whether the connection then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        answer = await read_answer(reader, within=within)
        if answer.headers.get("connection") == "close":
            answer.closed = await closed(reader, within=within)
        return answer
    finally:
        writer.close()


async def refusals(port: int) -> dict[str, float]:
    """The gateway's refusal counters from its /metrics, by reason."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    pattern = r'^gateway_http_refusals_total\{reason="([a-z_]+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


async def metric(port: int, name: str) -> float:
    """The sum of a metric's series in the gateway's /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    return sum(float(m[1]) for m in re.finditer(pattern, text, re.MULTILINE))
