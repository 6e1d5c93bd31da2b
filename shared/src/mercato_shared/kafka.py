"""The Kafka producer every process builds, with the settings `docs/architecture.md` requires."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from mercato_shared.settings import ServiceSettings

# Partitions of each topic, as deploy/local/kafka.sh and deploy/k8s/base/create-topics.sh
# create them: the most workers of one service that consume at once.
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
