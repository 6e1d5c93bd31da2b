"""The worker process every domain service runs: consumer, outbox relay and a health server."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared import inbox
from mercato_shared.consumer import BatchLock, EventConsumer, Handler
from mercato_shared.db import create_engine, create_sessionmaker, ping
from mercato_shared.embedded import EmbeddedServer
from mercato_shared.health import health_router
from mercato_shared.kafka import create_producer
from mercato_shared.logs import configure_logging
from mercato_shared.metrics import EVENT_LOOP_LAG, EventLoopLag, expose_metrics
from mercato_shared.outbox import OutboxRelay
from mercato_shared.settings import ServiceSettings
from mercato_shared.tracing import (
    FASTAPI_TELEMETRY,
    instrument_engine,
    setup_tracing,
    shutdown_tracing,
)

log = logging.getLogger(__name__)

INBOX_PURGE_SECONDS = 600.0


# A periodic job of a worker (a deadline sweep, a purge), called as job(sessions=...).
Job = Callable[..., Awaitable[object]]


@dataclass(frozen=True)
class WorkerSpec:
    """What a service plugs into the shared worker: its tables, topics, handlers and jobs."""

    settings: ServiceSettings
    inbox: Table
    topics: tuple[str, ...]
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    # The outbox its steps write to, relayed to Kafka; None for a service that emits nothing.
    outbox: Table | None = None
    # (job, interval in seconds)
    jobs: tuple[tuple[Job, float], ...] = ()
    # Events of different orders in one batch handled at once (see consumer.py).
    concurrency: int = 1
    # Locks the rows a batch's steps share before they run (see consumer.py).
    lock_batch: BatchLock | None = None
    # Run once the consumer has stopped: clients the handlers hold (an HTTP pool, SMTP).
    closers: tuple[Callable[[], Awaitable[object]], ...] = ()


async def _every(job: Job, interval: float, sessions: async_sessionmaker[AsyncSession]) -> None:
    while True:
        try:
            await job(sessions=sessions)
        except Exception:
            # A database blip must not stop the job for good; the next round retries.
            log.exception("periodic job %s failed", getattr(job, "__name__", job))
        await asyncio.sleep(interval)


class _DeadLetterProducer:
    """Started on first use, so a worker that never dead-letters holds no extra connection."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        # Partitions are handled side by side: two first dead letters must not start two.
        self._starting = asyncio.Lock()

    async def __call__(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = create_producer(self._settings)
                await producer.start()
                self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


async def run_worker(spec: WorkerSpec) -> None:
    """Run until SIGTERM/SIGINT; a crashed part stops the process so its supervisor restarts it."""
    settings = spec.settings
    engine = create_engine(settings)
    instrument_engine(engine)
    dead_letters = _DeadLetterProducer(settings)
    relay = None
    if spec.outbox is not None:
        relay = OutboxRelay(
            service=settings.service_name,
            engine=engine,
            outbox=spec.outbox,
            producer_factory=lambda: create_producer(settings),
            batch_size=settings.outbox_batch_size,
            poll_interval=settings.outbox_poll_interval_seconds,
        )
    sessions = create_sessionmaker(engine)
    consumer = EventConsumer(
        settings=settings,
        topics=[settings.topic(name) for name in spec.topics],
        handlers=spec.handlers,
        sessions=sessions,
        inbox_table=spec.inbox,
        dead_letters=dead_letters,
        concurrency=spec.concurrency,
        lock_batch=spec.lock_batch,
    )

    async def database() -> None:
        await ping(engine)

    async def kafka() -> None:
        if not consumer.assignment:
            raise RuntimeError("no partitions assigned yet")

    health = FastAPI(title=f"{settings.service_name}-worker", telemetry=FASTAPI_TELEMETRY)
    health.include_router(health_router({"database": database, "kafka": kafka}))
    expose_metrics(health)
    server = EmbeddedServer(
        uvicorn.Config(
            health, host=settings.worker_host, port=settings.worker_port, log_config=None
        )
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    purge_inbox: Job = functools.partial(inbox.purge, settings=settings)
    jobs = (*spec.jobs, (purge_inbox, INBOX_PURGE_SECONDS))
    tasks = {
        *([asyncio.create_task(relay.run(), name="outbox-relay")] if relay else []),
        asyncio.create_task(consumer.run(), name="consumer"),
        asyncio.create_task(server.serve(), name="health-server"),
        EventLoopLag(EVENT_LOOP_LAG, service=settings.service_name).start(),
        *(
            asyncio.create_task(_every(job, interval, sessions), name=f"job-{index}")
            for index, (job, interval) in enumerate(jobs)
        ),
    }
    stopper = asyncio.create_task(stop.wait(), name="stop")
    failed = False
    try:
        done, _ = await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopper}:
            failed = True
            exc = task.exception()
            log.error("worker part %s stopped: %r", task.get_name(), exc, exc_info=exc)
    finally:
        server.should_exit = True
        for task in tasks | {stopper}:
            if task.get_name() != "health-server":
                task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await dead_letters.close()
        for close in spec.closers:
            try:
                await close()
            except Exception:
                log.exception("closing %s failed", getattr(close, "__qualname__", close))
        await engine.dispose()
    if failed:
        raise SystemExit(1)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (as for the apis under uvicorn), else asyncio's own loop.

    A worker's time goes mostly to the event loop's socket writes and polls, one of each per
    database or broker round trip; uvloop does both in C for a fraction of the CPU.
    """
    try:
        import uvloop  # optional: absent on platforms it does not support
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(spec: WorkerSpec) -> None:
    """Console-script entry point for ``<service>-worker``."""
    configure_logging(f"{spec.settings.service_name}-worker", spec.settings.log_level)
    setup_tracing(f"{spec.settings.service_name}-worker")
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_worker(spec))
    finally:
        shutdown_tracing()
