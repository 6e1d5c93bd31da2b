"""The forwarding path: one pooled aiohttp session, headers rewritten, bodies streamed back."""

from __future__ import annotations

import logging
import uuid

import aiohttp

from gateway.asgi import (
    BodyTooLargeError,
    ClientDisconnectedError,
    Receive,
    Scope,
    Send,
    read_body,
    send_problem,
)
from gateway.routing import Route
from mercato_shared.identity import IDENTITY_HEADER

log = logging.getLogger(__name__)

# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway alone; a client sending them is trying to choose its own identity.
GATEWAY_OWNED = frozenset(
    {IDENTITY_HEADER.lower(), "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "host"}
)
REQUEST_ID = "x-request-id"


def _connection_options(raw_headers: list[tuple[bytes, bytes]]) -> frozenset[str]:
    """Header names a Connection header marks as hop-by-hop (RFC 9110 section 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in raw_headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    )


def _request_headers(scope: Scope, request_id: str, identity: str) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    host = ""
    dropped = HOP_BY_HOP | GATEWAY_OWNED | _connection_options(scope["headers"]) | {REQUEST_ID}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "host":
            host = value
        if name not in dropped:
            headers.append((name, value))
    client = scope.get("client")
    headers += [
        (REQUEST_ID, request_id),
        (IDENTITY_HEADER, identity),
        ("x-forwarded-for", client[0] if client else "unknown"),
        ("x-forwarded-proto", scope.get("scheme", "http")),
    ]
    if host:
        headers.append(("x-forwarded-host", host))
    return headers


def request_id_of(scope: Scope) -> str:
    """Keep a well-formed client request id (for correlation), else mint one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and 0 < len(value) <= 128 and value.isascii():
            return str(value.decode())
    return uuid.uuid4().hex


class Forwarder:
    def __init__(self, session: aiohttp.ClientSession, *, max_body_bytes: int) -> None:
        self._session = session
        self._max_body = max_body_bytes

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        route: Route,
        identity: str,
        request_id: str,
    ) -> None:
        """Forward one request to an instance of ``route`` and stream the answer back."""
        try:
            body = await read_body(receive, self._max_body)
        except BodyTooLargeError:
            await send_problem(
                send, 413, f"request body exceeds {self._max_body} bytes", slug="body-too-large"
            )
            return
        except ClientDisconnectedError:
            return
        target = route.next_instance() + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        started = False
        try:
            async with self._session.request(
                scope["method"],
                target,
                headers=_request_headers(scope, request_id, identity),
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=route.timeout_seconds),
                allow_redirects=False,
            ) as upstream:
                dropped = HOP_BY_HOP | _connection_options(list(upstream.raw_headers))
                response_headers = [
                    (name.lower(), value)
                    for name, value in upstream.raw_headers
                    if name.lower().decode("latin-1") not in dropped
                ]
                response_headers.append((REQUEST_ID.encode(), request_id.encode()))
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream.status,
                        "headers": response_headers,
                    }
                )
                started = True
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("upstream %s failed: %r", target, exc)
            if started:
                # Mid-body there is no status left to change: cut the response short so the
                # client sees a truncated body rather than a silently wrong one.
                raise
            if isinstance(exc, TimeoutError):
                await send_problem(
                    send, 504, f"upstream {route.prefix} timed out", slug="upstream-timeout"
                )
            else:
                await send_problem(send, 502, f"upstream {route.prefix} failed", slug="bad-gateway")
