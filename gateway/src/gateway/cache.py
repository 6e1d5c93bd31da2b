"""An in-process cache of public GET and HEAD answers, per route (docs/gateway.md, "Caching").

Only a request without credentials (no Authorization, no Cookie) is looked up or stored; a
200 is stored unless the upstream forbids it (no-store, private, no-cache, Set-Cookie,
Vary: *), for the route's TTL or the upstream's max-age if shorter, and kept past that for
stale-if-error: while the upstream fails, the stale entry answers, its Age telling how old
it is. A HEAD is answered from (and fetches) the GET's entry, as nginx does.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.asgi import Message, Receive, Scope, Send, send_problem
from gateway.settings import CacheConfig
from gateway.upstreams import Upstream
from mercato_shared.http_cache import NOT_MODIFIED_HEADERS, none_match

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
# A request carrying these is someone's: never answered from the cache, nor stored.
_CREDENTIALS = frozenset({b"authorization", b"cookie"})
# Not sent upstream on a lookup's fetch: the cache needs the whole answer, and answers the
# client's conditional itself. A range request is not cached at all.
_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since"})
# Not stored: the cache sets its own Age; the request id is the request's, not the answer's.
_UNSTORED = frozenset({b"age", b"x-request-id"})
_NOT_MODIFIED = frozenset(name.encode() for name in NOT_MODIFIED_HEADERS)
_NO_STORE = frozenset({"no-store", "private", "no-cache"})

Key = tuple[bytes, tuple[bytes, ...]]


# Forwarder.forward: (scope, receive, send, *, upstream, ..., response_headers).
Forward = Callable[..., Awaitable[None]]


@dataclass(slots=True)
class Entry:
    """A stored 200: the upstream's headers and body, and until when it may answer."""

    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: str | None
    stored_at: float
    fresh_until: float
    stale_until: float


def cache_control(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str | None]:
    """The directives of every Cache-Control header, names lower-cased (RFC 9111 5.2)."""
    directives: dict[str, str | None] = {}
    for name, value in headers:
        if name != b"cache-control":
            continue
        for part in value.decode("latin-1").split(","):
            directive, eq, argument = part.strip().partition("=")
            if directive:
                directives[directive.lower()] = argument.strip('"') if eq else None
    return directives


def _seconds(value: str | None) -> float | None:
    return float(value) if value is not None and value.isdigit() else None


def _values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    return b", ".join(value for key, value in headers if key == name)


@dataclass(frozen=True, slots=True)
class _Counters:
    hit: Counter
    miss: Counter
    stale: Counter
    bypass: Counter
    entries: Gauge


class _Capture:
    """The send the forwarder writes to: holds a storable answer back, passes others on.

    ``swallow`` drops a failure (a 5xx, the gateway's own 502/503/504) that a stale entry
    will answer instead; ``head`` drops the body of a GET fetched for a HEAD.
    """

    def __init__(self, send: Send, *, limit: int, extra: int, head: bool, swallow: bool) -> None:
        self._send = send
        self._limit = limit
        self._extra = extra
        self._head = head
        self._swallow_failure = swallow
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.mode = "waiting"  # then "held", "passed" or "swallowed"; "complete" once held whole
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            if self.status >= 500 and self._swallow_failure:
                self.mode = "swallowed"
                return
            # The forwarder appends the per-request headers (RateLimit, X-Request-Id) last.
            headers: list[tuple[bytes, bytes]] = message["headers"]
            self.headers = headers[: len(headers) - self._extra]
            self._start = message
            if self.status == 200:
                self.mode = "held"
            else:
                await self.release()
            return
        if self.mode == "swallowed":
            return
        if self.mode == "held":
            self._chunks.append(message.get("body", b""))
            self._size += len(self._chunks[-1])
            if self._size > self._limit:
                await self.release(more_body=message.get("more_body", False))
            elif not message.get("more_body", False):
                self.mode = "complete"
            return
        await self._body(message.get("body", b""), more=message.get("more_body", False))

    async def release(self, *, more_body: bool = True) -> None:
        """Send what was held and pass everything after it on."""
        assert self._start is not None  # noqa: S101 - called after the start message
        self.mode = "passed"
        await self._send(self._start)
        if self._chunks or not more_body:
            await self._body(self.body, more=more_body)
            self._chunks = []

    async def _body(self, chunk: bytes, *, more: bool) -> None:
        if self._head:
            chunk = b""
            if more:
                return
        await self._send({"type": "http.response.body", "body": chunk, "more_body": more})


class ResponseCache:
    """One route's entries, least recently used first out, and its fetches in flight."""

    def __init__(
        self,
        config: CacheConfig,
        *,
        counters: _Counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self._counters = counters
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        # Path and query -> the request header names the latest answer there Vary'd on.
        self._vary: OrderedDict[bytes, tuple[bytes, ...]] = OrderedDict()
        self._fetching: dict[Key, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def forward(
        self,
        forward: Forward,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        response_headers: list[tuple[bytes, bytes]],
        **options: Any,
    ) -> None:
        """Answer from the cache when allowed and fresh, else through ``forward`` (storing)."""
        if scope["method"] not in CACHEABLE_METHODS:
            await forward(scope, receive, send, response_headers=response_headers, **options)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if any(name in _CREDENTIALS or name == b"range" for name, _ in headers):
            self._counters.bypass.inc()
            await forward(scope, receive, send, response_headers=response_headers, **options)
            return
        target = scope["raw_path"] + b"?" + scope.get("query_string", b"")
        key = self._key(target, headers)
        entry = self._fresh(key)
        fetching = self._fetching.get(key) if entry is None else None
        if fetching is not None:
            # One fetch per key at a time: the others wait for it and take what it stored.
            await fetching.wait()
            entry = self._fresh(key)
        if entry is not None:
            self._counters.hit.inc()
            await self._answer(send, scope, entry, response_headers, age=True)
            return
        if fetching is not None:
            # It stored nothing (an answer not to store, a failure): fetch side by side
            # rather than queue behind each other.
            await self._fetch(forward, scope, receive, send, key, response_headers, options)
            return
        done = self._fetching[key] = asyncio.Event()
        try:
            await self._fetch(forward, scope, receive, send, key, response_headers, options)
        finally:
            del self._fetching[key]
            done.set()

    def _key(self, target: bytes, headers: list[tuple[bytes, bytes]]) -> Key:
        names = self._vary.get(target, ())
        return target, tuple(_values(headers, name) for name in names)

    def _fresh(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or self.clock() >= entry.fresh_until:
            return None
        self._entries.move_to_end(key)
        return entry

    def _stale(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        return entry if entry is not None and self.clock() < entry.stale_until else None

    async def _fetch(
        self,
        forward: Forward,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: Key,
        extra: list[tuple[bytes, bytes]],
        options: dict[str, Any],
    ) -> None:
        stale = self._stale(key)
        capture = _Capture(
            send,
            limit=self.config.max_body_bytes,
            extra=len(extra),
            head=scope["method"] == "HEAD",
            swallow=stale is not None,
        )
        upstream_scope = dict(scope)
        upstream_scope["method"] = "GET"
        upstream_scope["headers"] = [h for h in scope["headers"] if h[0] not in _CONDITIONAL]
        try:
            await forward(upstream_scope, receive, capture, response_headers=extra, **options)
        except (TimeoutError, aiohttp.ClientError):
            # The upstream broke off mid-body: nothing was sent yet if the answer was held.
            if capture.mode not in ("held", "swallowed"):
                raise
            if stale is None:
                self._counters.miss.inc()
                await send_problem(send, 502, "upstream failed", slug="bad-gateway")
                return
            capture.mode = "swallowed"
        if capture.mode == "swallowed":
            assert stale is not None  # noqa: S101 - only swallowed with a stale entry
            self._counters.stale.inc()
            await self._answer(send, scope, stale, extra, age=True)
            return
        self._counters.miss.inc()
        if capture.mode != "complete":
            return
        entry = self._store(key[0], scope["headers"], capture.headers, capture.body)
        if entry is None:
            await capture.release(more_body=False)
            return
        await self._answer(send, scope, entry, extra, age=False)

    def _store(
        self,
        target: bytes,
        request_headers: list[tuple[bytes, bytes]],
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> Entry | None:
        """Store a complete 200 if its headers allow, under the key its Vary names."""
        directives = cache_control(headers)
        if _NO_STORE & directives.keys() or any(name == b"set-cookie" for name, _ in headers):
            return None
        vary = tuple(
            sorted(
                {
                    name.strip().lower().encode()
                    for name in _values(headers, b"vary").decode("latin-1").split(",")
                    if name.strip()
                }
            )
        )
        if b"*" in vary:
            return None
        ttl = self.config.ttl_seconds
        max_age = _seconds(directives.get("s-maxage", directives.get("max-age")))
        if max_age is not None:
            ttl = min(ttl, max_age)
        if ttl <= 0:
            return None
        stale_for = self.config.stale_if_error_seconds
        allowed = _seconds(directives.get("stale-if-error"))
        if allowed is not None:
            stale_for = min(stale_for, allowed)
        now = self.clock()
        etag = _values(headers, b"etag").decode("latin-1") or None
        entry = Entry(
            headers=[(name, value) for name, value in headers if name not in _UNSTORED],
            body=body,
            etag=etag,
            stored_at=now,
            fresh_until=now + ttl,
            stale_until=now + ttl + stale_for,
        )
        self._vary[target] = vary
        self._vary.move_to_end(target)
        key = (target, tuple(_values(request_headers, name) for name in vary))
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.config.max_entries:
            self._entries.popitem(last=False)
        while len(self._vary) > self.config.max_entries:
            self._vary.popitem(last=False)
        self._counters.entries.set(len(self._entries))
        return entry

    async def _answer(
        self,
        send: Send,
        scope: Scope,
        entry: Entry,
        extra: list[tuple[bytes, bytes]],
        *,
        age: bool,
    ) -> None:
        """The entry as a 200 (no body for a HEAD), or a 304 if the client holds its ETag."""
        headers = entry.headers
        if none_match(_values(scope["headers"], b"if-none-match").decode("latin-1"), entry.etag):
            status, body = 304, b""
            headers = [(name, value) for name, value in headers if name in _NOT_MODIFIED]
        else:
            status, body = 200, b"" if scope["method"] == "HEAD" else entry.body
        if age:
            seconds = max(0, int(self.clock() - entry.stored_at))
            headers = [*headers, (b"age", str(seconds).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": body})


def route_caches(
    upstreams: Iterable[Upstream], *, registry: CollectorRegistry
) -> dict[str, ResponseCache]:
    """A cache for each route that configures one, by route prefix, counted in ``registry``."""
    requests = Counter(
        "gateway_cache_requests",
        "GET and HEAD requests on caching routes: hit, miss, stale (upstream failed) or bypass",
        ["route", "result"],
        registry=registry,
    )
    entries = Gauge(
        "gateway_cache_entries",
        "Answers stored in a route's cache",
        ["route"],
        registry=registry,
        # Each process has its own cache: the entries of every live process.
        multiprocess_mode="livesum",
    )
    return {
        upstream.prefix: ResponseCache(
            upstream.config.cache,
            counters=_Counters(
                hit=requests.labels(upstream.prefix, "hit"),
                miss=requests.labels(upstream.prefix, "miss"),
                stale=requests.labels(upstream.prefix, "stale"),
                bypass=requests.labels(upstream.prefix, "bypass"),
                entries=entries.labels(upstream.prefix),
            ),
        )
        for upstream in upstreams
        if upstream.config.cache is not None
    }
