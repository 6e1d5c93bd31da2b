"""The forwarding path: pooled aiohttp, headers rewritten, bodies streamed, upstreams guarded.

Retries happen only for requests that are idempotent by method and carry no body, and only
within the upstream's retry budget, each on another instance: a POST is never repeated.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from prometheus_client import Counter

from gateway.asgi import Receive, Scope, Send, send_problem
from gateway.upstreams import Instance, NoInstanceError, Upstream
from mercato_shared.identity import IDENTITY_HEADER
from mercato_shared.resilience import BulkheadFullError, Permit

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
# Set by the gateway alone: a client sending them is trying to choose its own identity or
# origin. The client's credentials stop here too; services trust only the identity header.
GATEWAY_OWNED = frozenset(
    {
        IDENTITY_HEADER.lower(),
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
        "host",
        "x-request-id",
    }
)
# The same names as bytes: headers are filtered before anything is decoded.
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
_NOT_FORWARDED = frozenset(name.encode() for name in HOP_BY_HOP | GATEWAY_OWNED)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
RETRYABLE_STATUS = frozenset({502, 503, 504})


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


def connection_options(raw_headers: Any) -> frozenset[bytes]:
    """Header names a Connection header marks as hop-by-hop (RFC 9110 section 7.6.1)."""
    return frozenset(
        token.strip().lower()
        for name, value in raw_headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    )


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (names in ASGI scopes are lower-case)."""
    return next((value for key, value in scope["headers"] if key == name), None)


def request_id_of(scope: Scope) -> str:
    """Keep a well-formed client request id (for correlation), else mint one."""
    value = header(scope, b"x-request-id")
    if value and len(value) <= 128 and value.isascii() and value.decode().isprintable():
        return value.decode()
    # 128 random bits as 32 hex digits, as uuid4().hex has them, without building a UUID.
    return os.urandom(16).hex()


def _has(raw_headers: Any, name: bytes) -> bool:
    return any(key == name for key, _ in raw_headers)


def _upstream_headers(
    scope: Scope, *, request_id: str, identity: str, client_ip: str
) -> list[tuple[str, str]]:
    raw = scope["headers"]
    dropped = _NOT_FORWARDED
    if _has(raw, b"connection"):
        # Rare, so the common request pays for one set lookup per header and nothing more.
        dropped = dropped | connection_options(raw)
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in raw
        if name not in dropped
    ]
    headers += [
        ("x-request-id", request_id),
        (IDENTITY_HEADER, identity),
        ("x-forwarded-for", client_ip),
        ("x-forwarded-proto", scope.get("scheme", "http")),
    ]
    host = header(scope, b"host")
    if host:
        headers.append(("x-forwarded-host", host.decode("latin-1")))
    return headers


class _BodyStream:
    """The client's request body as it arrives, refused past the size limit."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self.too_large = False
        self.client_gone = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ClientGoneError
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                self.too_large = True
                raise BodyTooLargeError
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def _may_retry(upstream: Upstream, tried: set[Instance], attempts_left: int) -> bool:
    # Asked only once an attempt has failed, so the budget pays for real retries only.
    return (
        attempts_left > 0
        and len(tried) < len(upstream.instances)
        and upstream.retry_budget.try_spend()
    )


def _oversized(exc: BaseException) -> bool:
    """Whether aiohttp refused an upstream's answer for a header's length or their number."""
    # ClientResponseError, from the protocol's copy of the parser's own error; too many
    # headers is a plain BadHttpMessage, told apart by its message only.
    cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
    return isinstance(cause, LineTooLong) or (
        isinstance(cause, BadHttpMessage) and cause.message == "Too many headers received"
    )


class Forwarder:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_body_bytes: int,
        oversized_answers: Counter | None = None,
    ) -> None:
        self._session = session
        self._max_body = max_body_bytes
        self._oversized_answers = oversized_answers

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        upstream: Upstream,
        identity: str,
        request_id: str,
        client_ip: str,
        response_headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Forward one request to an instance of ``upstream`` and stream the answer back."""
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max_body):
            await self._too_large(send)
            return
        has_body = header(scope, b"transfer-encoding") is not None or declared not in (None, b"0")
        retryable = scope["method"] in IDEMPOTENT and not has_body
        body = _BodyStream(receive, self._max_body) if has_body else None
        headers = _upstream_headers(
            scope, request_id=request_id, identity=identity, client_ip=client_ip
        )
        try:
            async with upstream.bulkhead:
                await self._attempts(
                    scope, send, upstream, headers, body, retryable, response_headers
                )
        except BulkheadFullError:
            await send_problem(
                send,
                503,
                f"upstream {upstream.prefix} is at its concurrency limit",
                slug="upstream-busy",
                headers=[(b"retry-after", b"1")],
            )

    async def _attempts(
        self,
        scope: Scope,
        send: Send,
        upstream: Upstream,
        headers: list[tuple[str, str]],
        body: _BodyStream | None,
        retryable: bool,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        upstream.retry_budget.record_request()
        target = scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        tried: set[Instance] = set()
        attempts_left = 1 + (upstream.config.max_retries if retryable else 0)
        while True:
            attempts_left -= 1
            try:
                instance, permit = upstream.pick(tried)
            except NoInstanceError as exc:
                await send_problem(
                    send,
                    503,
                    f"no healthy instance of {upstream.prefix}",
                    slug="upstream-unavailable",
                    headers=[(b"retry-after", str(int(exc.retry_after + 0.999)).encode())],
                )
                return
            tried.add(instance)
            can_retry = functools.partial(_may_retry, upstream, tried, attempts_left)
            answered = await self._one_attempt(
                scope, send, upstream, instance, permit, target, headers, body, extra, can_retry
            )
            if answered:
                return
            log.info("retrying %s %s on another instance", scope["method"], target)

    async def _one_attempt(
        self,
        scope: Scope,
        send: Send,
        upstream: Upstream,
        instance: Instance,
        permit: Permit,
        target: str,
        headers: list[tuple[str, str]],
        body: _BodyStream | None,
        extra: list[tuple[bytes, bytes]],
        can_retry: Callable[[], bool],
    ) -> bool:
        """True when the client got an answer; False when the caller should retry elsewhere."""
        instance.outstanding += 1
        started = False
        try:
            async with self._session.request(
                scope["method"],
                instance.url + target,
                headers=headers,
                data=body.__aiter__() if body is not None else None,
                timeout=aiohttp.ClientTimeout(total=upstream.config.timeout_seconds),
                allow_redirects=False,
            ) as response:
                if response.status >= 500:
                    permit.failure()
                    if response.status in RETRYABLE_STATUS and can_retry():
                        return False
                else:
                    permit.success()
                lowered = [(name.lower(), value) for name, value in response.raw_headers]
                dropped = _HOP_BY_HOP_BYTES
                if _has(lowered, b"connection"):
                    dropped = dropped | connection_options(lowered)
                out = [(name, value) for name, value in lowered if name not in dropped]
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": out + extra,
                    }
                )
                started = True
                async for chunk in response.content.iter_any():
                    # A small body arrives whole: ending with it saves the ASGI server a
                    # separate, empty last message.
                    last = response.content.at_eof()
                    await send({"type": "http.response.body", "body": chunk, "more_body": not last})
                    if last:
                        return True
                await send({"type": "http.response.body", "body": b""})
                return True
        except (TimeoutError, aiohttp.ClientError, BodyTooLargeError, ClientGoneError) as exc:
            return await self._failed(send, upstream, permit, exc, body, started, can_retry)
        finally:
            instance.outstanding -= 1

    async def _too_large(self, send: Send) -> None:
        await send_problem(
            send, 413, f"request body exceeds {self._max_body} bytes", slug="body-too-large"
        )

    async def _failed(
        self,
        send: Send,
        upstream: Upstream,
        permit: Permit,
        exc: BaseException,
        body: _BodyStream | None,
        started: bool,
        can_retry: Callable[[], bool],
    ) -> bool:
        if body is not None and (body.too_large or body.client_gone):
            permit.ignore()  # the client's fault, not the instance's
            if body.too_large and not started:
                await self._too_large(send)
            return True
        if not permit.settled:
            permit.failure()
        log.warning("upstream %s failed: %r", upstream.prefix, exc)
        if started:
            # Mid-body there is no status left to change: cut the response short so the
            # client sees a truncated body rather than a silently wrong one.
            raise exc
        if can_retry():
            return False
        if isinstance(exc, TimeoutError):
            await send_problem(
                send, 504, f"upstream {upstream.prefix} timed out", slug="upstream-timeout"
            )
        elif isinstance(exc, aiohttp.ClientResponseError) and _oversized(exc):
            if self._oversized_answers is not None:
                self._oversized_answers.inc()
            await send_problem(
                send,
                502,
                f"upstream {upstream.prefix} answered with headers over the gateway's limits",
                slug="upstream-headers-too-large",
            )
        else:
            await send_problem(send, 502, f"upstream {upstream.prefix} failed", slug="bad-gateway")
        return True
