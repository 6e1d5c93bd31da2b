"""Fixtures of the order tests: settings, sessions on a migrated database, the API client."""

import pytest

from mercato_shared.db import create_engine, create_sessionmaker
from order_service.app import create_app
from order_service.settings import OrderSettings
from tests.apps import client_for


@pytest.fixture
def settings(order_db, keys):
    return OrderSettings(database_url=order_db, identity_public_keys=keys[1], kafka_prefix="p.")


@pytest.fixture
async def sessions(settings):
    engine = create_engine(settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def env(settings, sessions):
    """(settings, sessions), as the saga's steps and the service's use cases take them."""
    return settings, sessions


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client
