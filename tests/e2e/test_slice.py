"""The first vertical slice through real processes: gateway → order → Kafka → inventory."""

import json
import signal
import uuid

import httpx
import pytest
from sqlalchemy import select

from inventory_service.models import inbox as inventory_inbox
from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.settings import ServiceSettings
from tests.e2e.processes import Process
from tests.infra import eventually, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
async def system(order_db, inventory_db, kafka_prefix, keys, dev_secret, tmp_path):
    ports = {name: free_port() for name in ("gateway", "order", "inventory", "ow", "iw")}
    common = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "KAFKA_PREFIX": kafka_prefix,
        "IDENTITY_PUBLIC_KEYS": str(keys[1]),
        "OUTBOX_POLL_INTERVAL_SECONDS": "5",
    }

    def service_env(prefix, db, api_port, worker_port):
        env = {f"{prefix}_{key}": value for key, value in common.items()}
        env |= {
            f"{prefix}_DATABASE_URL": db,
            f"{prefix}_API_PORT": str(api_port),
            f"{prefix}_WORKER_PORT": str(worker_port),
        }
        return env

    order_env = service_env("ORDER", order_db, ports["order"], ports["ow"])
    inventory_env = service_env("INVENTORY", inventory_db, ports["inventory"], ports["iw"])
    gateway_env = {
        "GATEWAY_PORT": str(ports["gateway"]),
        "GATEWAY_IDENTITY_PRIVATE_KEY_FILE": str(keys[0]),
        "GATEWAY_REDIS_KEY_PREFIX": f"{kafka_prefix}rl:",
        "GATEWAY_AUTH_ISSUERS": json.dumps(
            [
                {
                    "issuer": "mercato-dev",
                    "audiences": ["mercato"],
                    "algorithms": ["HS256"],
                    "hs256_secret_file": str(dev_secret),
                }
            ]
        ),
        "GATEWAY_ROUTES": (
            f'[{{"prefix": "/api/v1/orders", "upstreams": ["http://127.0.0.1:{ports["order"]}"]}},'
            f'{{"prefix": "/api/v1/products", '
            f'"upstreams": ["http://127.0.0.1:{ports["inventory"]}"]}}]'
        ),
    }
    Process(
        "inventory-migrate", inventory_env, health_port=0, logs=tmp_path, args=("--seed-demo",)
    ).run()

    processes = [
        Process("order-api", order_env, health_port=ports["order"], logs=tmp_path),
        Process("order-worker", order_env, health_port=ports["ow"], logs=tmp_path),
        Process("inventory-api", inventory_env, health_port=ports["inventory"], logs=tmp_path),
        Process("inventory-worker", inventory_env, health_port=ports["iw"], logs=tmp_path),
        Process("gateway", gateway_env, health_port=ports["gateway"], logs=tmp_path),
    ]
    try:
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_ready()
        yield f"http://127.0.0.1:{ports['gateway']}", inventory_db, ports
    finally:
        codes = {process.script: process.stop() for process in processes}
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit too.
    assert all(code in (0, -signal.SIGTERM) for code in codes.values()), codes


async def test_order_flows_from_gateway_through_kafka_to_inventory(system, dev_token):
    gateway, inventory_db, ports = system
    alice = {"Authorization": f"Bearer {dev_token('alice')}"}
    async with httpx.AsyncClient(base_url=gateway, timeout=10, headers=alice) as client:
        products = await client.get("/api/v1/products", headers={"Authorization": ""})
        assert products.status_code == 200, products.text
        assert "MUG-BLUE" in [product["sku"] for product in products.json()["items"]]

        bad = await client.post("/api/v1/orders", json={"lines": []})
        assert bad.status_code == 422
        assert bad.headers["content-type"] == "application/problem+json"

        created = await client.post(
            "/api/v1/orders", json={"lines": [{"sku": "MUG-BLUE", "quantity": 2}]}
        )
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["customer_id"] == "alice"

        read = await client.get(f"/api/v1/orders/{order['id']}")
        assert read.status_code == 200
        assert read.json()["status"] == "PENDING"

        # Another customer cannot see it; nobody gets past the gateway without a token.
        bob = {"Authorization": f"Bearer {dev_token('bob')}"}
        assert (await client.get(f"/api/v1/orders/{order['id']}", headers=bob)).status_code == 404
        anonymous = await client.post(
            "/api/v1/orders",
            json={"lines": [{"sku": "MUG-BLUE", "quantity": 1}]},
            headers={"Authorization": ""},
        )
        assert anonymous.status_code == 401

    # Calling the services directly, around the gateway, gets nowhere.
    async with httpx.AsyncClient(timeout=10) as direct:
        for port, path in (
            (ports["order"], f"/api/v1/orders/{order['id']}"),
            (ports["inventory"], "/api/v1/products"),
        ):
            forged = {"X-Mercato-Identity": "forged", **alice}
            assert (
                await direct.get(f"http://127.0.0.1:{port}{path}", headers=forged)
            ).status_code == 401

    engine = create_engine(ServiceSettings(database_url=inventory_db))
    try:
        sessions = create_sessionmaker(engine)

        async def received():
            async with transaction(sessions) as session:
                rows = await session.execute(
                    select(inventory_inbox.c.event_type).where(
                        inventory_inbox.c.order_id == uuid.UUID(order["id"])
                    )
                )
                return rows.scalars().all()

        assert await eventually(received, within=30) == ["order.created"]
    finally:
        await engine.dispose()
