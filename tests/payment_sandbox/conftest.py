"""The sandbox in-process, with its ledger in a file of the test's own."""

import uuid

import pytest

from payment_sandbox.app import create_app
from payment_sandbox.settings import SandboxSettings
from tests.apps import client_for


@pytest.fixture
def sandbox_settings(tmp_path):
    return SandboxSettings(database_path=tmp_path / "sandbox.db", seed=7)


@pytest.fixture
async def client(sandbox_settings):
    async with client_for(create_app(sandbox_settings)) as client:
        yield client


class Calls:
    """Small builders of sandbox requests, so that tests read as the story they tell."""

    def __init__(self, client):
        self.client = client

    async def authorize(self, order_id=None, amount=2500, currency="EUR", key=None):
        order_id = order_id or str(uuid.uuid4())
        return await self.client.post(
            "/v1/authorizations",
            json={"order_id": order_id, "amount": amount, "currency": currency},
            headers={"Idempotency-Key": key or f"auth-{order_id}"},
        )

    async def authorized(self, **kwargs):
        response = await self.authorize(**kwargs)
        assert response.status_code == 201, response.text
        return response.json()

    async def captured(self, **kwargs):
        auth = await self.authorized(**kwargs)
        response = await self.client.post(f"/v1/authorizations/{auth['id']}/capture")
        assert response.status_code == 200, response.text
        return response.json()

    async def refund(self, authorization_id, amount, key="refund-1"):
        return await self.client.post(
            f"/v1/authorizations/{authorization_id}/refunds",
            json={"amount": amount},
            headers={"Idempotency-Key": key},
        )

    async def ledger(self, order_id=None):
        params = {} if order_id is None else {"order_id": order_id}
        response = await self.client.get("/v1/ledger", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def configure(self, **knobs):
        response = await self.client.put("/v1/_config", json=knobs)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def calls(client):
    return Calls(client)
