"""The order API in-process against a real, migrated Postgres database."""

import json
import uuid

import pytest
from sqlalchemy import func, select

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.identity import Role
from order_service.models import Order, OrderLine, outbox
from tests.apps import assert_problem

ORDER = {"lines": [{"sku": "MUG-BLUE", "quantity": 2}, {"sku": "TEE-M", "quantity": 1}]}


async def _counts(settings):
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            return tuple(
                [
                    await session.scalar(select(func.count()).select_from(table))
                    for table in (Order.__table__, OrderLine.__table__, outbox)
                ]
            )
    finally:
        await engine.dispose()


async def test_create_stores_pending_order_and_its_event(client, settings, sign):
    response = await client.post("/api/v1/orders", json=ORDER, headers=sign("alice"))
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "PENDING"
    assert order["customer_id"] == "alice"
    assert [line["sku"] for line in order["lines"]] == ["MUG-BLUE", "TEE-M"]

    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            row = (await session.execute(select(outbox))).one()
    finally:
        await engine.dispose()
    assert row.topic == "p.orders"
    assert row.key == order["id"]
    assert row.envelope["type"] == "order.created"
    assert row.envelope["payload"]["lines"] == ORDER["lines"]

    again = await client.get(f"/api/v1/orders/{order['id']}", headers=sign("alice"))
    assert again.status_code == 200
    assert again.json() == order


async def test_other_customers_order_is_not_found_but_admin_sees_it(client, sign):
    created = (await client.post("/api/v1/orders", json=ORDER, headers=sign("alice"))).json()
    path = f"/api/v1/orders/{created['id']}"
    assert_problem(await client.get(path, headers=sign("mallory")), 404)
    admin = await client.get(path, headers=sign("root", Role.ADMIN))
    assert admin.status_code == 200


async def test_unknown_order_is_a_404_problem(client, sign):
    assert_problem(await client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=sign()), 404)
    assert_problem(await client.get("/api/v1/orders/not-a-uuid", headers=sign()), 422)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param(b'{"lines": [', 400, id="malformed-json"),
        pytest.param(json.dumps({"lines": []}).encode(), 422, id="no-lines"),
        pytest.param(json.dumps({}).encode(), 422, id="missing-lines"),
        pytest.param(
            json.dumps({"lines": [{"sku": "MUG-BLUE", "quantity": 0}]}).encode(), 422, id="qty-0"
        ),
        pytest.param(
            json.dumps({"lines": [{"sku": "MUG-BLUE", "quantity": -3}]}).encode(), 422, id="qty-neg"
        ),
        pytest.param(
            json.dumps({"lines": [{"sku": "MUG-BLUE", "quantity": "2"}]}).encode(),
            422,
            id="qty-str",
        ),
        pytest.param(
            json.dumps({"lines": [{"sku": "MUG-BLUE", "quantity": 1, "price": 0}]}).encode(),
            422,
            id="unknown-line-field",
        ),
        pytest.param(json.dumps({**ORDER, "customer_id": "bob"}).encode(), 422, id="unknown-field"),
        pytest.param(
            json.dumps({"lines": [{"sku": "bad sku!", "quantity": 1}]}).encode(), 422, id="bad-sku"
        ),
    ],
)
async def test_bad_input_is_a_problem_and_writes_nothing(client, settings, sign, body, status):
    response = await client.post(
        "/api/v1/orders",
        content=body,
        headers={**sign(), "content-type": "application/json"},
    )
    problem = assert_problem(response, status)
    assert problem["errors"]
    assert await _counts(settings) == (0, 0, 0)


async def test_lines_of_one_sku_are_added_up(client, sign):
    lines = [
        {"sku": "A", "quantity": 1},
        {"sku": "B", "quantity": 1},
        {"sku": "A", "quantity": 2.0},
    ]
    response = await client.post("/api/v1/orders", json={"lines": lines}, headers=sign())
    assert response.status_code == 201, response.text
    assert response.json()["lines"] == [{"sku": "A", "quantity": 3}, {"sku": "B", "quantity": 1}]


async def test_requests_without_a_valid_identity_are_refused(client, settings, sign):
    assert_problem(await client.post("/api/v1/orders", json=ORDER), 401)
    forged = {"X-Mercato-Identity": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}
    assert_problem(await client.post("/api/v1/orders", json=ORDER, headers=forged), 401)
    assert await _counts(settings) == (0, 0, 0)


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_idempotency_key_replays_refuses_other_bodies_and_in_flight(client, settings, sign):
    headers = {**sign("alice"), "Idempotency-Key": "k-1"}
    first = await client.post("/api/v1/orders", json=ORDER, headers=headers)
    assert first.status_code == 201
    again = await client.post("/api/v1/orders", json=ORDER, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = {"lines": [{"sku": "MUG-RED", "quantity": 1}]}
    assert_problem(await client.post("/api/v1/orders", json=other, headers=headers), 422)
    # The key is the customer's own: bob's k-1 is another order.
    bobs = await client.post(
        "/api/v1/orders", json=ORDER, headers={**sign("bob"), "Idempotency-Key": "k-1"}
    )
    assert bobs.status_code == 201
    assert await _counts(settings) == (2, 4, 2)

    # While a first request holds the key, a second one is told to come back later.
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            from order_service import repository

            assert await repository.try_lock_key(session, "alice", "k-2")
            busy = await client.post(
                "/api/v1/orders", json=ORDER, headers={**sign("alice"), "Idempotency-Key": "k-2"}
            )
            assert_problem(busy, 409)
    finally:
        await engine.dispose()
    assert await _counts(settings) == (2, 4, 2)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
async def test_malformed_idempotency_key_is_a_422(client, settings, sign, key):
    headers = {**sign(), "Idempotency-Key": key}
    assert_problem(await client.post("/api/v1/orders", json=ORDER, headers=headers), 422)
    assert await _counts(settings) == (0, 0, 0)


async def test_list_shows_own_orders_and_admins_all(client, sign):
    for who in ("alice", "alice", "bob"):
        await client.post("/api/v1/orders", json=ORDER, headers=sign(who))
    alice = (await client.get("/api/v1/orders", headers=sign("alice"))).json()
    assert alice["total"] == 2
    assert {o["customer_id"] for o in alice["items"]} == {"alice"}
    peek = (await client.get("/api/v1/orders?customer_id=bob", headers=sign("alice"))).json()
    assert {o["customer_id"] for o in peek["items"]} == {"alice"}
    admin = sign("root", Role.ADMIN)
    assert (await client.get("/api/v1/orders", headers=admin)).json()["total"] == 3
    page = (await client.get("/api/v1/orders?customer_id=bob&limit=1", headers=admin)).json()
    assert (page["total"], len(page["items"])) == (1, 1)
    assert_problem(await client.get("/api/v1/orders?limit=0", headers=admin), 422)


async def test_cancel_through_the_api(client, settings, sign):
    order = (await client.post("/api/v1/orders", json=ORDER, headers=sign("alice"))).json()
    path = f"/api/v1/orders/{order['id']}/cancel"
    assert_problem(await client.post(path, headers=sign("mallory")), 404)
    cancelled = await client.post(path, headers=sign("alice"))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    assert [h["step"] for h in cancelled.json()["history"]] == ["created", "cancelled"]
    again = assert_problem(await client.post(path, headers=sign("alice")), 409)
    assert again["order_status"] == "CANCELLED"
    assert_problem(await client.post("/api/v1/orders/nope/cancel", headers=sign()), 422)
    assert_problem(await client.post(f"/api/v1/orders/{uuid.uuid4()}/cancel", headers=sign()), 404)
    assert await _counts(settings) == (1, 2, 2)
