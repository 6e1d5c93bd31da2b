"""A whole running system, shared by the tests of one module (e2e/ and faults/)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import pytest

from mercato_shared.kafka import ensure_topics
from tests import infra
from tests.e2e.system import SERVICES, System


@pytest.fixture(scope="module", name="system_env")
def system_env() -> dict[str, str]:
    """Environment added to every process; a test module may override this fixture."""
    return {}


@pytest.fixture(scope="module")
async def system(stack, keys, dev_secret, tmp_path_factory, system_env) -> AsyncIterator[System]:
    # One at a time: Alembic runs each in a thread with its own event loop.
    databases = {s: await infra.create_database(f"{s}_service") for s in SERVICES}
    prefix = infra.random_prefix()
    await ensure_topics(infra.KAFKA, [f"{prefix}{t}" for t in ("orders", "inventory", "payments")])
    await ensure_topics(infra.KAFKA, [f"{prefix}{s}.dlq" for s in SERVICES], partitions=1)
    system = System(
        workdir=tmp_path_factory.mktemp("system"),
        keys=keys,
        dev_secret=dev_secret,
        databases=databases,
        prefix=prefix,
        extra_env=system_env,
    )
    try:
        await system.start()
        yield system
    except BaseException:
        print(system.tails())  # noqa: T201 - what the processes said, for a failed start
        raise
    finally:
        codes = system.stop()
        await asyncio.gather(*(infra.drop_database(url) for url in databases.values()))
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit too.
    assert all(code in (0, -signal.SIGTERM, None) for code in codes.values()), codes
