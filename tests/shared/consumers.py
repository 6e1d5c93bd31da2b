"""Building and running an EventConsumer in the consumer tests."""

import asyncio

from mercato_shared.consumer import EventConsumer
from order_service.models import inbox
from tests.infra import eventually


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
