"""Prometheus metrics of every process, defined once per process (prometheus-client's model).

Labels name the service (``order``), so one Prometheus scrape config covers every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato_shared.resilience import BreakerState, CircuitBreaker

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A metric's labelled children, each made once and kept.

    ``labels()`` takes a lock and a lookup on every call, which a per-event path would pay
    for every event.
    """

    def __init__(self, metric: M, *fixed: str) -> None:
        self._metric: M = metric
        self._fixed = fixed
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        """The child for the fixed label values followed by ``values``."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*self._fixed, *values)
        return child


HTTP_REQUESTS = Counter(
    "mercato_http_requests",
    "HTTP requests served, by route template and status",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "mercato_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_PROCESSED = Counter(
    "mercato_events_processed",
    "Events consumed, by type and outcome (handled, duplicate, ignored, dead_lettered)",
    ["service", "type", "outcome"],
)
EVENT_DURATION = Histogram(
    "mercato_event_processing_seconds",
    "Time from receiving an event to committing its transaction, retries included",
    ["service", "type"],
)
CONSUMER_LAG = Gauge(
    "mercato_consumer_lag",
    "Records between the consumer's position and the partition's end",
    ["service", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "mercato_dead_letters", "Events sent to the dead-letter topic", ["service", "topic"]
)
OUTBOX_BACKLOG = Gauge("mercato_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST = Gauge(
    "mercato_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
OUTBOX_PUBLISHED = Counter(
    "mercato_outbox_published", "Outbox rows published to Kafka", ["service"]
)
BREAKER_STATE = Gauge(
    "mercato_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open",
    ["service", "dependency"],
)
BREAKER_TRANSITIONS = Counter(
    "mercato_breaker_transitions",
    "Circuit breaker state changes",
    ["service", "dependency", "to"],
)
SAGA_OUTCOMES = Counter(
    "mercato_saga_outcomes", "Orders that reached a final state", ["status", "reason"]
)
SAGA_DURATION = Histogram(
    "mercato_saga_time_to_terminal_seconds",
    "Time from placing an order to its final state",
    ["status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)


def event_loop_lag_gauge(registry: CollectorRegistry | None = REGISTRY) -> Gauge:
    """The event-loop lag gauge in ``registry`` (the gateway keeps a registry of its own)."""
    return Gauge(
        "mercato_event_loop_lag_seconds",
        "How late the event loop ran a periodic timer: the worst of the last ten seconds",
        ["service"],
        registry=registry,
        # Several processes behind one /metrics (multiprocess mode): the worst loop's lag.
        multiprocess_mode="livemax",
    )


EVENT_LOOP_LAG = event_loop_lag_gauge()


class EventLoopLag:
    """Measures how late the running loop wakes a sleeping task, the wait every callback sees.

    One timer every ``interval`` seconds, so the cost is a wake-up four times a second. The
    gauge holds the worst lag of the last ``window`` seconds rather than the latest: a scrape
    every few seconds would otherwise miss a stall between two ticks.
    """

    def __init__(
        self, gauge: Gauge, *, service: str, interval: float = 0.25, window: float = 10.0
    ) -> None:
        self._gauge = gauge.labels(service)
        self._interval = interval
        self._recent: deque[float] = deque(maxlen=max(1, round(window / interval)))

    async def run(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        self._gauge.set(0)
        while True:
            started = loop.time()
            await asyncio.sleep(self._interval)
            self._recent.append(max(0.0, loop.time() - started - self._interval))
            self._gauge.set(max(self._recent))

    def start(self) -> asyncio.Task[None]:
        """The measuring task, on the running loop; cancel it to stop."""
        return asyncio.create_task(self.run(), name="event-loop-lag")


_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


# prometheus-client's own switch: set before it is imported, every metric of the process
# keeps its values in files of this directory, which every process serving /metrics reads.
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_directory() -> Path | None:
    """The directory the processes behind one /metrics share, if there are several."""
    value = os.environ.get(MULTIPROCESS_DIRECTORY)
    return Path(value) if value else None


def clear_multiprocess_directory(directory: Path) -> None:
    """Empty ``directory`` for a new set of processes: old files would count as theirs."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # no signal: only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def join_multiprocess_metrics() -> None:
    """Forget the live gauges of processes that died without leaving (killed, out of memory).

    Live gauges (``multiprocess_mode="live..."``) must go with their process; a process
    joining is what its supervisor starts in place of one that died. Counters and
    histograms of dead processes stay: their counts happened. Nothing outside multiprocess
    mode.
    """
    directory = multiprocess_directory()
    if directory is None:
        return
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        # Two processes joining at once may both remove a dead one's files.
        if not _alive(pid):
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def leave_multiprocess_metrics() -> None:
    """Take this process's live gauges out of /metrics, as it stops serving."""
    directory = multiprocess_directory()
    if directory is not None:
        mark_process_dead(os.getpid(), str(directory))  # type: ignore[no-untyped-call]


def scrape_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics serves: ``registry``, or every process's files in multiprocess mode."""
    directory = multiprocess_directory()
    if directory is None:
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(directory))  # type: ignore[no-untyped-call]
    return merged


def expose_metrics(app: Starlette, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve ``registry`` at /metrics, the path scrapers ask for by default.

    A route rather than prometheus-client's ASGI app mounted there: a mount answers /metrics
    itself with a redirect to /metrics/, which not every scraper follows.
    """
    served = scrape_registry(registry)

    async def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(served), media_type=content_type)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def instrument_breaker(breaker: CircuitBreaker, *, service: str) -> None:
    """Export a breaker's state and transitions."""
    BREAKER_STATE.labels(service, breaker.name).set(0)

    def record(name: str, _: BreakerState, to: BreakerState) -> None:
        BREAKER_STATE.labels(service, name).set(_STATE_VALUE[to])
        BREAKER_TRANSITIONS.labels(service, name, str(to)).inc()

    breaker.on_transition(record)


class StatusRecorder:
    """An ASGI ``send`` that passes every message on and keeps the response's status.

    The status stays 500 when the application fails before it starts a response, which is
    what the client then gets from the server.
    """

    __slots__ = ("_send", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class HttpMetrics:
    """ASGI middleware counting requests by route template (never by raw path: unbounded)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.app(scope, receive, recorder)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, template, str(recorder.status)).inc()
            HTTP_DURATION.labels(self.service, method, template).observe(
                time.perf_counter() - started
            )
