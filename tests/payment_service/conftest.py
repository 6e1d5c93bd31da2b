"""A sandbox per test and the payment settings that point at it."""

import pytest

from mercato_shared.db import create_engine, create_sessionmaker
from payment_service.settings import PaymentSettings
from tests.infra import random_prefix
from tests.payment_service.support import Saga, Sandbox


@pytest.fixture
async def sandbox(tmp_path):
    sandbox = Sandbox(tmp_path / "sandbox.db")
    await sandbox.start()
    yield sandbox
    await sandbox.stop()


@pytest.fixture
def settings(payment_db, keys, sandbox):
    # Short timeouts and backoffs keep the fault tests quick; the shapes stay the defaults'.
    return PaymentSettings(
        database_url=payment_db,
        identity_public_keys=keys[1],
        kafka_prefix=random_prefix(),
        sandbox_url=sandbox.url,
        sandbox_timeout_seconds=0.3,
        sandbox_connect_timeout_seconds=0.3,
        sandbox_max_attempts=3,
        sandbox_retry_base_delay_seconds=0.01,
        sandbox_retry_max_delay_seconds=0.05,
        sandbox_breaker_window_size=10,
        sandbox_breaker_minimum_calls=4,
        sandbox_breaker_open_seconds=60,
    )


@pytest.fixture
async def sessions(settings):
    engine = create_engine(settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def saga(settings, sessions):
    saga = Saga(settings, sessions)
    yield saga
    await saga.sandbox.aclose()
