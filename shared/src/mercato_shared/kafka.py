"""aiokafka wrappers with the settings DESIGN.md requires, and topic administration."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from mercato_shared.settings import ServiceSettings

log = logging.getLogger(__name__)

PARTITIONS = 6


def create_producer(settings: ServiceSettings) -> AIOKafkaProducer:
    """An idempotent producer; idempotence forces acks=all, so nothing is lost on leader change."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.service_name}-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=2,
        request_timeout_ms=15_000,
    )


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
