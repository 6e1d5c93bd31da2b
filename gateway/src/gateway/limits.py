"""The gateway's HTTP limits, enforced in the server before a request reaches the application.

uvicorn's httptools protocol bounds neither the size nor the number of request headers, nor
the time a client takes to send them or its body. The subclass built here counts in the
parser's own callbacks and answers a refusal with a problem body rendered once at start-up,
so a refused request costs no token verification, no Redis round trip and no upstream call.
The limits uvicorn has itself (keep-alive, concurrency) stay uvicorn's (``server_options``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httptools
from prometheus_client import Counter
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.asgi import Message, send_problem
from gateway.settings import GatewaySettings

# How long a refused connection is still read, its bytes dropped, after the answer: closing a
# socket with unread data resets it, and a reset can destroy the answer before it is read.
LINGER_SECONDS = 2.0
# Bytes of a request head beyond its URL and header bytes: request line, separators, CRLFs.
_FRAMING_PER_HEADER = 4
_FRAMING_PER_REQUEST = 64


class _RefusedError(Exception):
    """Raised in a parser callback: stops the parser, which reports it as a callback error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    """One reason's answer, split where the server's own headers go, and its counter."""

    head: bytes
    body: bytes
    counter: Counter


def _render(
    status: int, detail: str, slug: str, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, bytes]:
    """The status line with headers, and the body, that ``send_problem`` sends."""
    head: list[bytes] = []
    body: list[bytes] = []

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.start":
            head.append(STATUS_LINE[status])
            head.extend(name + b": " + value + b"\r\n" for name, value in message["headers"])
        else:
            body.append(message["body"])

    # ``collect`` never suspends, so one step runs the coroutine to its end.
    with contextlib.suppress(StopIteration):
        send_problem(collect, status, detail, slug=slug, headers=headers).send(None)
    return b"".join(head), b"\r\n" + b"".join(body)


def refusals(settings: GatewaySettings, counter: Counter) -> dict[str, Refusal]:
    """Every refusal the protocol can answer with, by the reason it is counted under."""
    close = [(b"connection", b"close")]
    table = {
        "url_too_long": (414, f"the request target exceeds {settings.max_url_bytes} bytes"),
        "header_too_large": (431, f"a request header exceeds {settings.max_header_bytes} bytes"),
        "headers_too_large": (
            431,
            f"the request headers exceed {settings.max_headers_bytes} bytes in all",
        ),
        "too_many_headers": (431, f"more than {settings.max_headers} request headers"),
        "header_timeout": (
            408,
            f"the request headers took longer than {settings.header_timeout_seconds} s",
        ),
        "body_timeout": (
            408,
            f"no request body arrived for {settings.body_idle_timeout_seconds} s",
        ),
        "body_too_slow": (
            408,
            f"the request body arrived slower than {settings.min_body_bytes_per_second} bytes/s",
        ),
        "too_many_connections": (503, "the gateway is at its connection limit"),
        "malformed": (400, "the request is not valid HTTP/1.1"),
    }
    out: dict[str, Refusal] = {}
    for reason, (status, detail) in table.items():
        extra = [(b"retry-after", b"1")] if status == 503 else []
        head, body = _render(status, detail, reason.replace("_", "-"), close + extra)
        out[reason] = Refusal(head, body, counter.labels(reason))
    return out


class _Deadlines:
    """The connections of one server, their deadlines checked by one sweep per interval.

    One timer per request (armed at its first byte, cancelled at its last) cost more than
    the checks themselves: about 11 µs of CPU per GET and 26 µs per POST, against 28 and 33
    for uvicorn's whole protocol. A sweep costs a comparison per connection per interval.
    """

    def __init__(self) -> None:
        self.watched: set[LimitedHttpToolsProtocol] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def watch(self, protocol: LimitedHttpToolsProtocol) -> None:
        self.watched.add(protocol)
        if self._sweep is None:
            self._schedule(protocol.loop, protocol.limits.sweep_interval)

    def unwatch(self, protocol: LimitedHttpToolsProtocol) -> None:
        self.watched.discard(protocol)

    def _schedule(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._sweep = loop.call_later(interval, self._check, loop, interval)

    def _check(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._sweep = None
        now = loop.time()
        for protocol in list(self.watched):
            protocol.check_deadlines(now)
        if self.watched:
            self._schedule(loop, interval)


@dataclass(frozen=True)
class Limits:
    """The numbers the protocol checks, read once from the settings."""

    max_url: int
    max_header: int
    max_headers_bytes: int
    max_headers: int
    # A head still incomplete after this many bytes is refused even while httptools still
    # gathers one header (it hands a header over only once the next one starts).
    max_head: int
    header_timeout: float
    body_idle: float
    min_body_rate: int
    body_grace: float
    max_connections: int
    refusals: dict[str, Refusal]
    # How often the open connections' deadlines are checked: a quarter of the shortest, so a
    # deadline is enforced at most that late, and never early.
    sweep_interval: float
    deadlines: _Deadlines = field(default_factory=lambda: _Deadlines())

    @classmethod
    def of(cls, settings: GatewaySettings, counter: Counter) -> Limits:
        return cls(
            max_url=settings.max_url_bytes,
            max_header=settings.max_header_bytes,
            max_headers_bytes=settings.max_headers_bytes,
            max_headers=settings.max_headers,
            max_head=settings.max_url_bytes
            + settings.max_headers_bytes
            + _FRAMING_PER_HEADER * settings.max_headers
            + _FRAMING_PER_REQUEST,
            header_timeout=settings.header_timeout_seconds,
            body_idle=settings.body_idle_timeout_seconds,
            min_body_rate=settings.min_body_bytes_per_second,
            body_grace=settings.body_rate_grace_seconds,
            max_connections=settings.max_connections,
            refusals=refusals(settings, counter),
            sweep_interval=min(
                1.0,
                settings.header_timeout_seconds / 4,
                settings.body_idle_timeout_seconds / 4,
                settings.body_rate_grace_seconds / 4,
            ),
        )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing what exceeds the gateway's HTTP limits.

    A request's head is timed from the connection (first request) or its first byte (later
    ones), and measured in ``on_url`` and ``on_header``; its body's pace is noted as it
    arrives. The deadlines are checked by the server's sweep (``_Deadlines``), not by a
    timer per request.
    """

    limits: Limits

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._refused = False
        # Between a message's first byte and its complete headers.
        self._in_head = False
        # When the head must be complete; 0 while no head is awaited.
        self._head_deadline = 0.0
        self._head_bytes = 0
        self._headers_bytes = 0
        self._header_count = 0
        # Between complete headers and a complete body; the clock starts at its first bytes.
        self._in_body = False
        self._body_clock = False
        self._body_started = 0.0
        self._body_last = 0.0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Refused connections must not count against those served: uvicorn would refuse
            # requests on every connection while too many are open.
            self.connections.discard(self)
            self._refuse("too_many_connections")
            return
        self._head_deadline = self.loop.time() + self.limits.header_timeout
        self.limits.deadlines.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.deadlines.unwatch(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._refuse(cause.reason if isinstance(cause, _RefusedError) else "malformed")
            return
        if self._in_head:
            # The first chunk of a head is not counted (it may end the previous request), so
            # this bound is coarse by one read; the exact ones are in the callbacks.
            if self._head_bytes > self.limits.max_head:
                self._refuse("headers_too_large")
        elif self._in_body:
            now = self.loop.time()
            if not self._body_clock:
                self._body_clock = True
                self._body_started = now
            self._body_last = now

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._headers_bytes = self._header_count = 0
        if not self._head_deadline:
            self._head_deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url:
            raise _RefusedError("url_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self.limits
        size = len(name) + len(value)
        self._headers_bytes += size
        self._header_count += 1
        if size > limits.max_header:
            raise _RefusedError("header_too_large")
        if self._header_count > limits.max_headers:
            raise _RefusedError("too_many_headers")
        if self._headers_bytes > limits.max_headers_bytes:
            raise _RefusedError("headers_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = 0.0
        # Tasks can outlive their connections; past the limit uvicorn would answer with a
        # plain-text 503 of its own.
        if self.limit_concurrency is not None and len(self.tasks) >= self.limit_concurrency:
            raise _RefusedError("too_many_connections")
        super().on_headers_complete()
        self._in_body = True
        self._body_clock = False
        self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def check_deadlines(self, now: float) -> None:
        """Refuse the request whose head or body is late; called by the server's sweep."""
        if self._refused:
            return
        if self._head_deadline and now >= self._head_deadline:
            self._header_timeout()
        elif self._in_body and self._body_clock:
            self._check_body(now)

    def _check_body(self, now: float) -> None:
        limits = self.limits
        waiting = self.cycle is not None and self.cycle.waiting_for_100_continue
        if self.flow.read_paused or waiting:
            # The gateway is not reading (its upstream is slower than the client, or it has
            # not asked for the body yet): the client's clock starts again.
            self._body_started = self._body_last = now
            self._body_bytes = 0
        elif now - self._body_last >= limits.body_idle:
            self._refuse("body_timeout")
        elif (
            limits.min_body_rate
            and now - self._body_started >= limits.body_grace
            and self._body_bytes < limits.min_body_rate * (now - self._body_started)
        ):
            self._refuse("body_too_slow")

    def _header_timeout(self) -> None:
        self._head_deadline = 0.0
        if self._in_head:
            self._refuse("header_timeout")
        elif not self._refused and self.cycle is None:
            # A connection that never sent a byte has nothing to answer: closed like an idle
            # keep-alive connection, but counted.
            self.limits.refusals["header_timeout"].counter.inc()
            self.transport.close()

    def _refuse(self, reason: str) -> None:
        """Answer with the reason's problem unless an answer has begun, then close."""
        refusal = self.limits.refusals[reason]
        refusal.counter.inc()
        cycle = self.cycle
        if self._in_body:
            # The cycle is the refused request's own, which may have been answered already.
            answerable = not cycle.response_started
        else:
            # A head is refused: the cycle, if any, is an earlier request's, whose answer may
            # still be on its way.
            answerable = cycle is None or cycle.response_complete
        self._refused = True
        self._in_head = self._in_body = False
        self._head_deadline = 0.0
        self._unset_keepalive_if_required()
        if cycle is not None and not cycle.response_complete:
            # What the application sends from now on is dropped, and it reads a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        if not answerable:
            self.transport.close()
            return
        server = b"".join(
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        )
        self.transport.write(refusal.head + server + refusal.body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def limited_protocol(settings: GatewaySettings, counter: Counter) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with the limits of ``settings``."""
    return type(
        "GatewayHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {"limits": Limits.of(settings, counter)},
    )


def server_options(settings: GatewaySettings) -> dict[str, Any]:
    """uvicorn's own settings for the limits it has (``limited_protocol`` adds the others)."""
    return {
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        # uvicorn counts the connection asking among those open, so it refuses from
        # ``limit_concurrency`` connections on; the protocol refuses first, with a problem.
        "limit_concurrency": settings.max_connections + 1,
    }
