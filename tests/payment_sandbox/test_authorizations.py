"""Authorizations: idempotency keys, declines and refusals of bad input."""

import uuid

import pytest

from tests.apps import assert_problem


async def test_authorize_then_replay_gives_the_same_authorization(calls):
    order_id = str(uuid.uuid4())
    first = await calls.authorize(order_id=order_id, amount=2500)
    assert first.status_code == 201
    body = first.json()
    assert body["status"] == "authorized"
    assert (body["order_id"], body["amount"], body["currency"]) == (order_id, 2500, "EUR")
    assert body["id"].startswith("auth_")
    assert "Idempotent-Replayed" not in first.headers

    replay = await calls.authorize(order_id=order_id, amount=2500)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == body
    ledger = await calls.ledger(order_id)
    assert ledger["authorization_count"] == 1
    assert ledger["authorized"] == ledger["held"] == 2500


async def test_same_key_with_another_body_is_refused(calls):
    order_id = str(uuid.uuid4())
    await calls.authorized(order_id=order_id, amount=2500)
    for changed in ({"amount": 2600}, {"currency": "USD"}, {"order_id": str(uuid.uuid4())}):
        args = {"order_id": order_id, "amount": 2500, "currency": "EUR", **changed}
        response = await calls.authorize(**args, key=f"auth-{order_id}")
        body = assert_problem(response, 422)
        assert str(body["type"]).endswith("idempotency-key-reused")
    ledger = await calls.ledger(order_id)
    assert ledger["authorization_count"] == 1
    assert ledger["authorized"] == 2500


async def test_a_replay_shows_the_authorization_as_it_stands_now(calls, client):
    order_id = str(uuid.uuid4())
    auth = await calls.authorized(order_id=order_id)
    assert (await client.post(f"/v1/authorizations/{auth['id']}/void")).status_code == 200
    replay = await calls.authorize(order_id=order_id)
    assert replay.status_code == 200
    assert replay.json()["status"] == "voided"


async def test_amounts_over_the_limit_are_declined(calls):
    await calls.configure(decline_over_amount=5000)
    at_limit = await calls.authorized(amount=5000)
    over = await calls.authorize(amount=5001)
    assert at_limit["status"] == "authorized"
    assert over.status_code == 201
    assert over.json()["status"] == "declined"
    assert over.json()["decline_reason"] == "amount_over_limit"
    ledger = await calls.ledger(over.json()["order_id"])
    assert (ledger["declined_count"], ledger["authorized"], ledger["held"]) == (1, 0, 0)


async def test_default_limit_is_one_thousand(calls):
    assert (await calls.authorized(amount=100_000))["status"] == "authorized"
    assert (await calls.authorized(amount=100_001))["status"] == "declined"


async def test_decline_rate_declines_at_random_and_replays_keep_the_verdict(calls):
    await calls.configure(decline_rate=1.0)
    order_id = str(uuid.uuid4())
    declined = await calls.authorized(order_id=order_id)
    assert declined["decline_reason"] == "do_not_honor"
    await calls.configure(decline_rate=0.0)
    # The verdict belongs to the key: a replay does not roll the dice again.
    assert (await calls.authorize(order_id=order_id)).json()["status"] == "declined"
    assert (await calls.authorized())["status"] == "authorized"


async def test_a_late_authorization_under_a_voided_key_is_declined(calls, client):
    order_id = str(uuid.uuid4())
    voided = await client.post(f"/v1/idempotency-keys/auth-{order_id}/void")
    assert voided.status_code == 200
    assert voided.json()["authorization"] is None
    late = await calls.authorize(order_id=order_id)
    assert late.status_code == 201
    assert late.json()["status"] == "declined"
    assert late.json()["decline_reason"] == "idempotency_key_voided"
    ledger = await calls.ledger(order_id)
    assert (ledger["authorized"], ledger["held"], ledger["charged"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"order_id": "o", "amount": 0, "currency": "EUR"}, 422),
        ({"order_id": "o", "amount": -5, "currency": "EUR"}, 422),
        ({"order_id": "o", "amount": 10.5, "currency": "EUR"}, 422),
        ({"order_id": "o", "amount": "100", "currency": "EUR"}, 422),
        ({"order_id": "o", "amount": 100, "currency": "eur"}, 422),
        ({"order_id": "o", "amount": 100, "currency": "EURO"}, 422),
        ({"order_id": "o", "amount": 100}, 422),
        ({"order_id": "", "amount": 100, "currency": "EUR"}, 422),
        ({"order_id": "o", "amount": 100, "currency": "EUR", "extra": 1}, 422),
        ([1, 2], 422),
        (b"{not json", 400),
    ],
)
async def test_bad_authorizations_are_problems_and_change_nothing(client, calls, body, status):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = await client.post(
        "/v1/authorizations",
        headers={"Idempotency-Key": "k1", "content-type": "application/json"},
        **kwargs,
    )
    assert_problem(response, status)
    assert (await calls.ledger())["items"] == []


async def test_authorization_needs_an_idempotency_key(client, calls):
    body = {"order_id": "o", "amount": 100, "currency": "EUR"}
    assert_problem(await client.post("/v1/authorizations", json=body), 422)
    too_long = {"Idempotency-Key": "k" * 256}
    assert_problem(await client.post("/v1/authorizations", json=body, headers=too_long), 422)
    assert (await calls.ledger())["items"] == []


async def test_read_an_authorization_and_404_for_an_unknown_one(client, calls):
    auth = await calls.authorized()
    read = await client.get(f"/v1/authorizations/{auth['id']}")
    assert read.status_code == 200
    assert read.json() == auth
    assert_problem(await client.get("/v1/authorizations/auth_nope"), 404)
