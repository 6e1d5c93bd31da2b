"""A real gateway process with short HTTP deadlines, and an upstream with headers on demand."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Self

from tests.e2e.processes import Process
from tests.infra import free_port

# Deadlines short enough for tests, long enough for a loaded two-core machine to meet.
SHORT_DEADLINES = {
    "GATEWAY_HEADER_TIMEOUT_SECONDS": "1",
    "GATEWAY_BODY_IDLE_TIMEOUT_SECONDS": "1",
    "GATEWAY_MIN_BODY_BYTES_PER_SECOND": "50",
    "GATEWAY_BODY_RATE_GRACE_SECONDS": "1",
    "GATEWAY_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
}


def gateway_environment(
    *,
    port: int,
    keys: tuple[Path, Path],
    secret_file: Path,
    routes: dict[str, str],
    **env: str,
) -> dict[str, str]:
    """A gateway's environment routing (public) prefixes to upstream URLs."""
    return {
        "GATEWAY_PORT": str(port),
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_IDENTITY_PRIVATE_KEY_FILE": str(keys[0]),
        "GATEWAY_REDIS_KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}:",
        "GATEWAY_AUTH_ISSUERS": json.dumps(
            [
                {
                    "issuer": "mercato-dev",
                    "audiences": ["mercato"],
                    "algorithms": ["HS256"],
                    "hs256_secret_file": str(secret_file),
                }
            ]
        ),
        "GATEWAY_ROUTES": json.dumps(
            [{"prefix": prefix, "upstreams": [url]} for prefix, url in routes.items()]
        ),
        "GATEWAY_ACCESS": json.dumps([{"path": f"{p}/**", "public": True} for p in routes]),
        "GATEWAY_RATE_LIMITS": json.dumps(
            [
                {"name": "user", "quota": 100_000, "window_seconds": 60},
                {"name": "anonymous", "quota": 100_000, "window_seconds": 60},
            ]
        ),
        **env,
    }


@contextlib.asynccontextmanager
async def gateway_process(
    *,
    keys: tuple[Path, Path],
    secret_file: Path,
    logs: Path,
    routes: dict[str, str],
    **env: str,
) -> AsyncIterator[int]:
    """A ``gateway`` process routing (public) prefixes to upstream URLs; yields its port."""
    port = free_port()
    environment = gateway_environment(
        port=port, keys=keys, secret_file=secret_file, routes=routes, **env
    )
    process = Process("gateway", environment, health_port=port, logs=logs)
    process.start()
    try:
        await process.wait_ready()
        yield port
    finally:
        process.stop()


class HeadersUpstream:
    """An upstream answering ``.../count/<n>`` with n headers, ``.../size/<n>`` with a header
    whose value is n bytes, each with a two-byte body, then closing."""

    def __init__(self) -> None:
        self.port = free_port()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            headers = [("Content-Length", "2"), ("Connection", "close")]
            kind, _, number = target.rpartition("/")
            if kind.endswith("/count"):
                headers += [(f"x-h{i}", "v") for i in range(int(number) - len(headers))]
            elif kind.endswith("/size"):
                # Not first: aiohttp's C parser counts the name in only for the first header.
                headers.append(("x-big", "v" * int(number)))
            lines = ["HTTP/1.1 200 OK", *(f"{name}: {value}" for name, value in headers)]
            writer.write(("\r\n".join(lines) + "\r\n\r\nok").encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
