"""`mercato dlq list|replay`: the dead-letter topics `<prefix><service>.dlq`.

Replay republishes each dead letter to its original topic with its original key, once: the
replayed position is committed in the consumer group `<prefix>mercato-dlq-replay`. Replaying
is safe because consumers are idempotent (their inbox skips events already handled).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

SERVICES = ("order", "inventory", "payment", "notification")


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def summary(self) -> str:
        try:
            event = json.loads(self.value)
            what = f"{event.get('type')} {event.get('id')} order {event.get('order_id')}"
        except (ValueError, AttributeError):
            what = f"{len(self.value)} undecodable bytes"
        origin = (
            f"{self.headers.get('original_topic')}:{self.headers.get('original_partition')}"
            f"@{self.headers.get('original_offset')}"
        )
        where = f"{self.topic}:{self.partition}@{self.offset}"
        return f"{where}  {what}  from {origin}  error: {self.headers.get('error')}"


def dlq_topics(prefix: str, services: tuple[str, ...] = SERVICES) -> list[str]:
    return [f"{prefix}{service}.dlq" for service in services]


async def _partitions(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    """The partitions of those of ``topics`` that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([t for t in topics if t in existing])
    finally:
        await admin.close()
    return sorted(
        (
            TopicPartition(topic["topic"], partition["partition"])
            for topic in described
            for partition in topic["partitions"]
        ),
        key=lambda tp: (tp.topic, tp.partition),
    )


async def _read(
    consumer: AIOKafkaConsumer, bootstrap: str, topics: list[str], *, from_committed: bool
) -> list[DeadLetter]:
    """Everything from the group's committed position (or the start) to the current end."""
    partitions = await _partitions(bootstrap, topics)
    if not partitions:
        return []
    consumer.assign(partitions)
    ends = await consumer.end_offsets(partitions)
    letters: list[DeadLetter] = []
    for tp in partitions:
        committed = await consumer.committed(tp) if from_committed else None
        consumer.seek(tp, committed if committed is not None else 0)
    pending = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        for records in batch.values():
            letters += [
                DeadLetter(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    {k: v.decode(errors="replace") for k, v in r.headers},
                )
                for r in records
            ]
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    return letters


def _consumer(bootstrap: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def list_letters(bootstrap: str, prefix: str) -> list[DeadLetter]:
    """Every dead letter still in the topics, replayed or not."""
    # A throwaway group that never commits: listing moves nothing.
    consumer = _consumer(bootstrap, f"{prefix}mercato-dlq-list-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        return await _read(consumer, bootstrap, dlq_topics(prefix), from_committed=False)
    finally:
        await consumer.stop()


async def replay(bootstrap: str, prefix: str) -> list[DeadLetter]:
    """Republish the dead letters not replayed before; returns them."""
    consumer = _consumer(bootstrap, f"{prefix}mercato-dlq-replay")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        letters = await _read(consumer, bootstrap, dlq_topics(prefix), from_committed=True)
        for letter in letters:
            target = letter.headers.get("original_topic")
            if target:
                await producer.send_and_wait(target, value=letter.value, key=letter.key)
        if letters:
            last: dict[TopicPartition, int] = {}
            for letter in letters:
                last[TopicPartition(letter.topic, letter.partition)] = letter.offset + 1
            await consumer.commit(last)
        return letters
    finally:
        await producer.stop()
        await consumer.stop()
