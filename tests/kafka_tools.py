"""Topics for tests: created under a prefix of their own, read back, and deleted after."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from mercato_shared.kafka import PARTITIONS
from tests import infra

log = logging.getLogger(__name__)

# Topics this process created: the test session deletes them when it ends, since a
# broker's start-up time grows with every partition it holds, and every test that
# consumes makes topics of its own.
created_topics: set[str] = set()


async def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    *,
    partitions: int = PARTITIONS,
    replication_factor: int = 1,
) -> None:
    """Create the topics that do not exist yet (the broker refuses auto-creation)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=name, num_partitions=partitions, replication_factor=replication_factor)
            for name in names
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
            created_topics.update(topic.name for topic in missing)
    finally:
        await admin.close()


async def delete_topics(
    bootstrap_servers: str, *, names: Iterable[str] = (), prefix: str = ""
) -> None:
    """Delete ``names`` and every topic starting with ``prefix``: leave the broker as found.

    Best effort: a broker that cannot be reached only leaves the topics behind.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        existing = await admin.list_topics()
        wanted = set(names)
        ours = [n for n in existing if n in wanted or (prefix and n.startswith(prefix))]
        # Bounded requests: one deletion request per hundred topics.
        for start in range(0, len(ours), 100):
            await admin.delete_topics(ours[start : start + 100])
        created_topics.difference_update(ours)
    except KafkaError as exc:
        log.warning("topics left behind: %r", exc)
    finally:
        await admin.close()


async def ping_kafka(bootstrap_servers: str) -> None:
    """Raise unless the cluster answers a metadata request."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


async def read_topic(topic: str, count: int, *, within: float = 30.0) -> list[ConsumerRecord]:
    """Read ``count`` records from the start of ``topic`` with a throwaway consumer group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=infra.KAFKA,
        group_id=f"reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + within
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    assert len(records) >= count, f"read {len(records)} of {count} records from {topic}"
    return records


async def end_offsets(
    topics: Iterable[str], *, partitions: int = PARTITIONS
) -> dict[TopicPartition, int]:
    """The end offset of each of the topics' partitions: how many records each holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=infra.KAFKA)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(
            [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        )
        return ends
    finally:
        await consumer.stop()
