"""Kafka consumption in batches: one partition's fetched events, one transaction, then offsets.

The handler contract (docs/saga.md says the same for the saga's steps):

- A handler gets the session of a transaction that already holds the event's inbox row and
  may hold other events' work: several events of one partition (up to
  ``consumer_batch_size``) are applied in one transaction, in offset order, and commit
  together. A handler must therefore not commit, roll back or close the session, and must
  take the row locks it needs itself (a handler before it in the batch may hold others).
- Two events of one order come from one partition and are applied in offset order, the
  second seeing the first's changes. Events of different orders may be applied at the same
  time by other partitions' batches or other workers; row locks serialise what they share.
- Each event's handler runs at most once per committed transaction, and exactly once over
  redeliveries: the inbox records the event's id with its effects. A handler that raises
  rolls back the whole batch; the consumer then splits the batch until the failing event
  stands alone and retries it: without limit for a transient failure, else up to
  ``consumer_max_attempts`` before dead-lettering it. Its neighbours are applied once, in a
  later transaction, so a handler may run more than once for an event before one of its
  transactions commits: its effects outside the database (a card authorization, a mail)
  must be idempotent.
- A service whose steps of different orders share rows gives a ``lock_batch``, which locks
  them for the whole batch, in one order, before the first step runs.
- With ``concurrency`` above 1, the events of different orders in one batch run at the same
  time (those of one order still one after the other, in offset order), so that steps
  waiting on a remote call wait together. They share the batch's session: such handlers do
  their database work and change loaded objects only inside ``db.serial(session)``. A batch
  is then at most ``concurrency`` events, so that its transaction lasts one round of calls.
- Offsets are committed after the transaction, at most once a second: a crash redelivers
  what was applied since, which the inbox makes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition
from opentelemetry.trace import SpanKind
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mercato_shared import inbox
from mercato_shared.db import transaction
from mercato_shared.events import Envelope
from mercato_shared.inbox import Delivery
from mercato_shared.metrics import (
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENT_DURATION,
    EVENTS_PROCESSED,
    Children,
)
from mercato_shared.outbox import EVENT_TYPE_HEADER
from mercato_shared.resilience.retry import backoff_delay
from mercato_shared.settings import ServiceSettings
from mercato_shared.tracing import context_from, tracer
from mercato_shared.tracing import enabled as tracing_enabled

log = logging.getLogger(__name__)

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]
# Run once per batch, before its steps, with the new events: where steps of different orders
# share hot rows (a product's stock), it locks them all in one order, so that two batches
# never hold some each and wait for the other's (a deadlock, which costs a second to detect).
BatchLock = Callable[[AsyncSession, Sequence[Envelope]], Awaitable[None]]

# Records one fetch may return, over all partitions: a batch is whatever a fetch returned,
# never something waited for, so a quiet stream is handled as soon as its event arrives.
FETCH_MAX_RECORDS = 500


@dataclass(frozen=True, slots=True)
class _Event:
    record: Any
    delivery: Delivery
    handler: Handler


def _header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


def _describe(events: Sequence[_Event]) -> str:
    if len(events) == 1:
        return f"event {events[0].delivery.envelope.id}"
    first, last = events[0].delivery, events[-1].delivery
    return f"batch of {len(events)} ({first.topic}:{first.partition} @{first.offset}-{last.offset})"


# Outages of our own infrastructure: retrying forever (the partition waits) is right, since
# dead-lettering an event because the database was restarting would lose the saga step.
# Deadlocks and serialization failures are the database's verdict on a moment, not on the
# events: a batch's steps lock rows in their own order, so two batches can deadlock, and
# the one Postgres rolls back succeeds when tried again.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(exc: BaseException) -> bool:
    """True for failures of the infrastructure rather than of the event itself."""
    if isinstance(exc, DBAPIError):
        if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
            return True
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, OSError | TimeoutError)


MAX_TRANSIENT_BACKOFF_SECONDS = 10.0
# Offsets go to the group coordinator at most this often while events keep coming, and at once
# when the stream pauses. A commit per event would cost a broker round trip per event; a crash
# redelivers at most this much, which the inbox makes harmless.
COMMIT_INTERVAL_SECONDS = 1.0
# The lag gauge is a scrape's figure (seconds apart): setting it after every fetch, which
# under load comes many times a second, only spent time.
LAG_INTERVAL_SECONDS = 1.0
SHUTDOWN_COMMIT_SECONDS = 5.0


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: EventConsumer) -> None:
        self._owner = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.commit_pending()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class EventConsumer:
    """Consumes topics with manual commits; handlers run inside their batch's transaction."""

    def __init__(
        self,
        *,
        settings: ServiceSettings,
        topics: list[str],
        handlers: Mapping[str, Handler],
        sessions: async_sessionmaker[AsyncSession],
        inbox_table: Table,
        dead_letters: Callable[[], Awaitable[AIOKafkaProducer]],
        commit_interval: float = COMMIT_INTERVAL_SECONDS,
        concurrency: int = 1,
        lock_batch: BatchLock | None = None,
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._handlers = handlers
        self._sessions = sessions
        self._inbox = inbox_table
        self._dead_letters = dead_letters
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: dict[TopicPartition, int] = {}
        self._commit_interval = commit_interval
        # Handlers that run side by side wait on remote calls: a batch is then one round of
        # them, so that its transaction (and its row locks) lasts about as long as one call.
        self._batch_size = settings.consumer_batch_size
        if concurrency > 1:
            self._batch_size = min(self._batch_size, concurrency)
        self._concurrency = concurrency
        self._lock_batch = lock_batch
        self._traced = tracing_enabled()
        service = settings.service_name
        self._outcomes = Children(EVENTS_PROCESSED, service)
        self._durations = Children(EVENT_DURATION, service)
        self._lags = Children(CONSUMER_LAG, service)
        self._committed_at = time.monotonic()
        self._lag_measured_at = -math.inf
        self.processed = 0
        self.dead_lettered = 0

    @property
    def assignment(self) -> set[TopicPartition]:
        return set() if self._consumer is None else set(self._consumer.assignment())

    async def _start(self) -> AIOKafkaConsumer:
        """Join the group, waiting out a broker that is not reachable yet."""
        attempt = 0
        while True:
            attempt += 1
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap_servers,
                group_id=self._settings.consumer_group,
                client_id=f"{self._settings.service_name}-worker",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                log.warning("Kafka unreachable, retrying: %s", exc)
                await asyncio.sleep(backoff_delay(attempt, base=0.5, cap=10.0))
                continue
            return consumer

    async def run(self) -> None:
        """Consume until cancelled."""
        consumer = await self._start()
        self._consumer = consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
                await self._process_batches(batches)
                if not batches or time.monotonic() - self._committed_at >= self._commit_interval:
                    await self.commit_pending()
                await self._measure_lag(consumer)
        finally:
            # What was handled before a stop is committed, so a restart does not re-read it.
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self.commit_pending(), SHUTDOWN_COMMIT_SECONDS)
            self._consumer = None
            await consumer.stop()

    async def _process_batches(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        """Handle one fetch: partitions side by side, each partition's records in order.

        Events of one order share a key, hence a partition, so they never overlap; events of
        different orders may, as they do with several workers, and the handlers' row locks
        serialise what they share. An event that waits on the database, the card processor
        or the mail server then holds up its partition only, not the whole worker. The next
        fetch (where rebalances happen) waits for the whole batch.
        """
        if len(batches) <= 1:
            for tp, records in batches.items():
                await self._process_partition(tp, records)
            return
        async with asyncio.TaskGroup() as group:
            for tp, records in batches.items():
                group.create_task(self._process_partition(tp, records))

    async def _process_partition(self, tp: TopicPartition, records: list[Any]) -> None:
        if not records:
            return
        events: list[_Event] = []
        for record in records:
            event = await self._decode(record)
            if event is not None:
                events.append(event)
        size = self._batch_size
        for start in range(0, len(events), size):
            await self._handle_batch(events[start : start + size])
        self._pending[tp] = records[-1].offset + 1

    async def _decode(self, record: Any) -> _Event | None:
        """The record's event with its handler; None for one this service does not handle."""
        # The relay names the type in a header: events of no concern here are skipped without
        # parsing them. Records from elsewhere may lack it; their envelope then decides.
        declared = _header(record.headers, EVENT_TYPE_HEADER)
        if declared is not None and declared not in self._handlers:
            self._count(declared, "ignored")
            return None
        try:
            envelope = Envelope.model_validate_json(record.value)
        except ValidationError as exc:
            await self._dead_letter(record, exc)
            return None
        handler = self._handlers.get(envelope.type)
        if handler is None:
            self._count(envelope.type, "ignored")
            return None
        delivery = Delivery(
            envelope=envelope, topic=record.topic, partition=record.partition, offset=record.offset
        )
        return _Event(record=record, delivery=delivery, handler=handler)

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Set the lag gauges from the fetches' high watermarks, at most once an interval."""
        now = time.monotonic()
        if now - self._lag_measured_at < LAG_INTERVAL_SECONDS:
            return
        self._lag_measured_at = now
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            gauge = self._lags(tp.topic, str(tp.partition))
            # Both figures are the consumer's own (no broker request): the watermark comes
            # with every fetch response, the position is where this consumer stands.
            gauge.set(max(0, highwater - await consumer.position(tp)))

    async def commit_pending(self) -> None:
        """Commit the offsets of every event whose transaction has committed."""
        self._committed_at = time.monotonic()
        if not self._pending or self._consumer is None:
            return
        offsets, self._pending = self._pending, {}
        # A batch still being handled when a rebalance revoked its partition finishes after
        # the revocation's own commit: its offset is no longer this member's to commit. The
        # partition's new owner re-reads from the last commit, and the inbox makes the
        # repeat harmless.
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The same, when the partition moved while the commit was on its way.
            log.warning("offset commit refused after a rebalance: %s", exc)

    async def _handle_batch(self, events: list[_Event]) -> None:
        """Apply ``events`` in one transaction; split the batch to isolate a failing event.

        Any failure rolls the transaction back, so none of its events took effect. A batch of
        several events is then split in two and each half applied on its own, in order.
        A transient failure (the database, the network, a remote service) of a single event
        retries it with backoff, holding the partition, as nothing about the event is wrong;
        splitting first lets the events before it commit meanwhile, which matters when each
        event makes a remote call that fails now and then: a whole batch would need every call
        to succeed in one attempt. Any other failure of a single event gets its retries, and the
        event is then dead-lettered while its neighbours are applied once each.
        """
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                ran = await self._apply(events)
            except Exception as exc:
                if len(events) > 1:
                    log.warning("%s failed, splitting it: %s", _describe(events), exc)
                    middle = len(events) // 2
                    await self._handle_batch(events[:middle])
                    await self._handle_batch(events[middle:])
                    return
                if is_transient(exc):
                    delay = backoff_delay(
                        attempt,
                        base=self._settings.consumer_retry_backoff_seconds,
                        cap=MAX_TRANSIENT_BACKOFF_SECONDS,
                    )
                    log.warning("%s: transient failure, retrying: %s", _describe(events), exc)
                    await asyncio.sleep(delay)
                    continue
                if attempt >= self._settings.consumer_max_attempts:
                    log.exception("%s failed %d times, dead-lettering", _describe(events), attempt)
                    await self._dead_letter(events[0].record, exc)
                    self._count(events[0].delivery.envelope.type, "dead_lettered")
                    return
                log.warning("%s: attempt %d failed: %s", _describe(events), attempt, exc)
                await asyncio.sleep(
                    backoff_delay(attempt, base=self._settings.consumer_retry_backoff_seconds)
                )
                continue
            elapsed = time.perf_counter() - started
            for event, handled in zip(events, ran, strict=True):
                kind = event.delivery.envelope.type
                self._count(kind, "handled" if handled else "duplicate")
                self._durations(kind).observe(elapsed)
            self.processed += len(events)
            return

    async def _apply(self, events: list[_Event]) -> list[bool]:
        """One transaction: the batch's inbox rows, then each new event's handler in order.

        Returns, per event, whether its handler ran (False for a redelivery).
        """
        ran: list[bool] = []
        async with transaction(self._sessions) as session:
            fresh = await inbox.record(session, self._inbox, [e.delivery for e in events])
            new: list[_Event] = []
            for event in events:
                # The same event twice in one batch (a relay that re-sent it) runs once.
                ran.append(event.delivery.envelope.id in fresh)
                if ran[-1]:
                    fresh.discard(event.delivery.envelope.id)
                    new.append(event)
            if self._lock_batch is not None and new:
                await self._lock_batch(session, [e.delivery.envelope for e in new])
            if self._concurrency > 1 and len(new) > 1:
                await self._run_side_by_side(session, new)
            else:
                for event in new:
                    await self._run(session, event)
        return ran

    async def _run(self, session: AsyncSession, event: _Event) -> None:
        with self._span(event):
            await event.handler(session, event.delivery.envelope)

    async def _run_side_by_side(self, session: AsyncSession, events: list[_Event]) -> None:
        """Each order's events in order, different orders at once, ``concurrency`` at most."""
        by_order: dict[uuid.UUID, list[_Event]] = {}
        for event in events:
            by_order.setdefault(event.delivery.envelope.order_id, []).append(event)
        turns = asyncio.Semaphore(self._concurrency)

        async def one_order(chain: list[_Event]) -> None:
            async with turns:
                for event in chain:
                    await self._run(session, event)

        try:
            async with asyncio.TaskGroup() as group:
                for chain in by_order.values():
                    group.create_task(one_order(chain))
        except ExceptionGroup as failed:
            # One failure, as a handler run alone would raise it: the batch is retried or
            # split by its kind, and the group's other failures roll back with it anyway.
            raise failed.exceptions[0] from None

    def _span(self, event: _Event) -> AbstractContextManager[Any]:
        if not self._traced:
            # No exporter: the span would be a no-op that still parses the record's headers.
            return contextlib.nullcontext()
        record, envelope = event.record, event.delivery.envelope
        return tracer.start_as_current_span(
            f"{record.topic} process",
            context=context_from(record.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.kafka.offset": record.offset,
                "mercato.event_type": envelope.type,
                "mercato.order_id": str(envelope.order_id),
            },
        )

    def _count(self, event_type: str, outcome: str) -> None:
        self._outcomes(event_type, outcome).inc()

    async def _dead_letter(self, record: Any, error: BaseException) -> None:
        headers = [
            ("error", f"{type(error).__name__}: {error}"[:2000].encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("consumer_group", self._settings.consumer_group.encode()),
        ]
        attempt = 0
        while True:
            attempt += 1
            try:
                producer = await self._dead_letters()
                await producer.send_and_wait(
                    self._settings.dead_letter_topic,
                    value=record.value,
                    key=record.key,
                    headers=headers,
                )
                self.dead_lettered += 1
                DEAD_LETTERS.labels(self._settings.service_name, record.topic).inc()
                log.error(
                    "dead-lettered %s",
                    json.dumps({"topic": record.topic, "offset": record.offset}),
                )
                return
            except KafkaError as exc:
                log.warning("dead-letter publish failed, retrying: %s", exc)
                await asyncio.sleep(backoff_delay(attempt, base=0.5, cap=10.0))
