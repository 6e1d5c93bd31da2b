"""Building and running an EventConsumer in the consumer tests."""

import asyncio
import contextlib

from mercato_shared.consumer import EventConsumer
from mercato_shared.db import create_engine, create_sessionmaker
from mercato_shared.kafka import create_producer
from mercato_shared.settings import ServiceSettings
from order_service.models import inbox
from tests.infra import KAFKA, eventually, random_prefix
from tests.kafka_tools import ensure_topics


@contextlib.asynccontextmanager
async def consumer_env(database_url, *, service_name, max_attempts):
    """(settings, sessions, producer) on topics of their own: an orders topic and its DLQ."""
    settings = ServiceSettings(
        service_name=service_name,
        database_url=database_url,
        kafka_bootstrap_servers=KAFKA,
        kafka_prefix=random_prefix(),
        consumer_max_attempts=max_attempts,
        consumer_retry_backoff_seconds=0.01,
    )
    await ensure_topics(KAFKA, [settings.topic("orders"), settings.dead_letter_topic], partitions=1)
    engine = create_engine(settings)
    producer = create_producer(settings)
    await producer.start()
    try:
        yield settings, create_sessionmaker(engine), producer
    finally:
        await producer.stop()
        await engine.dispose()


def consumer_for(settings, sessions, producer, handler, **options):
    """A consumer of the settings' orders topic, handling order.created with ``handler``.

    ``options`` are the EventConsumer's own (commit_interval, concurrency, lock_batch...).
    """

    async def dead_letters():
        return producer

    return EventConsumer(
        settings=settings,
        topics=[settings.topic("orders")],
        handlers={"order.created": handler},
        sessions=sessions,
        inbox_table=inbox,
        dead_letters=dead_letters,
        **options,
    )


async def run_until(consumer, condition, within=30):
    """Run ``consumer`` until ``condition`` holds (failing after ``within`` s), then stop it."""
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(condition, within=within)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
