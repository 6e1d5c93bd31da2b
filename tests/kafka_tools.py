"""Reading topics back in tests."""

from __future__ import annotations

import time
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from tests import infra


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
