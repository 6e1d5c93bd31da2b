"""The notification API in-process against a real, migrated Postgres database."""

import uuid

import pytest

from mercato_shared.db import create_engine, create_sessionmaker, transaction
from mercato_shared.identity import Role
from notification_service.app import create_app
from notification_service.models import Notification
from notification_service.settings import NotificationSettings
from tests.apps import assert_problem, client_for


@pytest.fixture
def settings(notification_db, keys):
    return NotificationSettings(database_url=notification_db, identity_public_keys=keys[1])


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture
async def notifications(settings):
    engine = create_engine(settings)
    try:
        async with transaction(create_sessionmaker(engine)) as session:
            for customer in ("alice", "alice", "bob"):
                note_id = uuid.uuid4()
                session.add(
                    Notification(
                        id=note_id,
                        order_id=uuid.uuid4(),
                        customer_id=customer,
                        recipient=f"{customer}@example.test",
                        kind="order.confirmed",
                        subject="Your order is confirmed",
                        body="...",
                        message_id=f"<{note_id}@mercato>",
                    )
                )
    finally:
        await engine.dispose()


async def test_customers_see_only_their_own(client, notifications, sign):
    alice = (await client.get("/api/v1/notifications", headers=sign("alice"))).json()
    assert [n["customer_id"] for n in alice["items"]] == ["alice", "alice"]
    assert {n["recipient"] for n in alice["items"]} == {"alice@example.test"}
    assert (alice["total"], alice["limit"], alice["offset"]) == (2, 50, 0)
    # A customer's filter for someone else is ignored, not honoured.
    peek = await client.get("/api/v1/notifications?customer_id=bob", headers=sign("alice"))
    assert {n["customer_id"] for n in peek.json()["items"]} == {"alice"}


async def test_admin_sees_all_or_filters(client, notifications, sign):
    admin = sign("root", Role.ADMIN)
    assert len((await client.get("/api/v1/notifications", headers=admin)).json()["items"]) == 3
    bob = (await client.get("/api/v1/notifications?customer_id=bob", headers=admin)).json()
    assert [n["customer_id"] for n in bob["items"]] == ["bob"]


async def test_identity_is_required(client):
    assert_problem(await client.get("/api/v1/notifications"), 401)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=x",
        "offset=-1",
        "offset=x",
        "customer_id=&limit=0",
        "offset=9223372036854775808",
        "limt=5",
        "customer_id=" + "x" * 256,
    ],
)
async def test_bad_paging_is_a_problem(client, notifications, sign, query):
    body = assert_problem(await client.get(f"/api/v1/notifications?{query}", headers=sign()), 422)
    assert body["errors"]


async def test_filter_by_order(client, notifications, sign):
    everything = (await client.get("/api/v1/notifications", headers=sign("alice"))).json()
    order_id = everything["items"][0]["order_id"]
    one = await client.get(f"/api/v1/notifications?order_id={order_id}", headers=sign("alice"))
    assert [n["order_id"] for n in one.json()["items"]] == [order_id]
    assert_problem(await client.get("/api/v1/notifications?order_id=x", headers=sign()), 422)


async def test_a_page_counts_what_it_leaves_out(client, notifications, sign):
    admin = sign("root", Role.ADMIN)
    page = (await client.get("/api/v1/notifications?limit=2&offset=1", headers=admin)).json()
    assert (len(page["items"]), page["total"], page["offset"]) == (2, 3, 1)
    bob = (await client.get("/api/v1/notifications?customer_id=bob", headers=admin)).json()
    assert bob["total"] == 1
