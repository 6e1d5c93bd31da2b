"""Capture, void, refund and key voids: legal moves, repeats, and 409/404 for the rest."""

import uuid

import pytest

from tests.apps import assert_problem


async def _post(client, path):
    return await client.post(path)


async def test_capture_is_idempotent_and_charges_once(client, calls):
    auth = await calls.authorized(amount=4200)
    path = f"/v1/authorizations/{auth['id']}/capture"
    first, again = await _post(client, path), await _post(client, path)
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "captured"
    assert first.json()["captured"] == 4200
    assert again.json() == first.json()
    ledger = await calls.ledger(auth["order_id"])
    assert (ledger["captured"], ledger["held"], ledger["charged"]) == (4200, 0, 4200)


async def test_void_is_idempotent_and_releases_the_hold(client, calls):
    auth = await calls.authorized(amount=4200)
    path = f"/v1/authorizations/{auth['id']}/void"
    first, again = await _post(client, path), await _post(client, path)
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == again.json()["status"] == "voided"
    ledger = await calls.ledger(auth["order_id"])
    assert (ledger["authorized"], ledger["voided"], ledger["held"], ledger["charged"]) == (
        4200,
        4200,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ("captured", "void"),
        ("voided", "capture"),
        ("declined", "capture"),
        ("declined", "void"),
    ],
)
async def test_illegal_transitions_are_conflicts_and_change_nothing(client, calls, setup, action):
    if setup == "declined":
        auth = (await calls.authorize(amount=10**7)).json()
    else:
        auth = await calls.authorized()
        verb = "capture" if setup == "captured" else "void"
        assert (await _post(client, f"/v1/authorizations/{auth['id']}/{verb}")).status_code == 200
    before = await calls.ledger(auth["order_id"])
    response = await _post(client, f"/v1/authorizations/{auth['id']}/{action}")
    assert_problem(response, 409)
    assert await calls.ledger(auth["order_id"]) == before


@pytest.mark.parametrize("action", ["capture", "void"])
async def test_unknown_authorizations_are_404(client, action):
    assert_problem(await _post(client, f"/v1/authorizations/auth_missing/{action}"), 404)


async def test_refunds_add_up_to_the_capture_and_no_further(client, calls):
    auth = await calls.captured(amount=3000)
    first = await calls.refund(auth["id"], 1000, key="r1")
    assert first.status_code == 201
    assert first.json()["amount"] == 1000
    assert first.json()["authorization_id"] == auth["id"]
    replay = await calls.refund(auth["id"], 1000, key="r1")
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(await calls.refund(auth["id"], 2001, key="r2"), 409)
    assert (await calls.refund(auth["id"], 2000, key="r3")).status_code == 201
    assert_problem(await calls.refund(auth["id"], 1, key="r4"), 409)
    ledger = await calls.ledger(auth["order_id"])
    assert (ledger["captured"], ledger["refunded"], ledger["charged"]) == (3000, 3000, 0)
    read = await client.get(f"/v1/authorizations/{auth['id']}")
    assert read.json()["refunded"] == 3000


async def test_refund_key_reused_for_another_refund_is_422(calls):
    auth = await calls.captured(amount=3000)
    other = await calls.captured(amount=3000)
    assert (await calls.refund(auth["id"], 500, key="r1")).status_code == 201
    assert_problem(await calls.refund(auth["id"], 600, key="r1"), 422)
    assert_problem(await calls.refund(other["id"], 500, key="r1"), 422)
    assert (await calls.ledger(auth["order_id"]))["refunded"] == 500
    assert (await calls.ledger(other["order_id"]))["refunded"] == 0


async def test_only_captures_can_be_refunded(client, calls):
    auth = await calls.authorized()
    assert_problem(await calls.refund(auth["id"], 100), 409)
    assert_problem(await calls.refund("auth_missing", 100), 404)
    assert (await calls.ledger(auth["order_id"]))["refunded"] == 0


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"amount": 0}, {"Idempotency-Key": "r"}),
        ({"amount": 1.5}, {"Idempotency-Key": "r"}),
        ({}, {"Idempotency-Key": "r"}),
        ({"amount": 100}, {}),
    ],
)
async def test_bad_refunds_are_problems_and_change_nothing(client, calls, body, headers):
    auth = await calls.captured(amount=3000)
    response = await client.post(
        f"/v1/authorizations/{auth['id']}/refunds", json=body, headers=headers
    )
    assert_problem(response, 422)
    assert (await calls.ledger(auth["order_id"]))["refunded"] == 0


async def test_voiding_a_key_voids_its_authorization_and_is_repeatable(client, calls):
    order_id = str(uuid.uuid4())
    auth = await calls.authorized(order_id=order_id)
    path = f"/v1/idempotency-keys/auth-{order_id}/void"
    first, again = await _post(client, path), await _post(client, path)
    assert first.status_code == again.status_code == 200
    assert first.json()["authorization"]["id"] == auth["id"]
    assert first.json()["authorization"]["status"] == "voided"
    assert again.json() == first.json()
    ledger = await calls.ledger(order_id)
    assert (ledger["held"], ledger["voided"], ledger["charged"]) == (0, 2500, 0)


async def test_voiding_the_key_of_a_declined_authorization_changes_nothing(client, calls):
    order_id = str(uuid.uuid4())
    await calls.authorize(order_id=order_id, amount=10**7)
    response = await _post(client, f"/v1/idempotency-keys/auth-{order_id}/void")
    assert response.status_code == 200
    assert response.json()["authorization"]["status"] == "declined"


async def test_the_key_of_a_capture_cannot_be_voided(client, calls):
    order_id = str(uuid.uuid4())
    await calls.captured(order_id=order_id)
    assert_problem(await _post(client, f"/v1/idempotency-keys/auth-{order_id}/void"), 409)
    ledger = await calls.ledger(order_id)
    assert (ledger["captured"], ledger["voided"], ledger["charged"]) == (2500, 0, 2500)


async def test_an_overlong_key_is_a_problem(client):
    assert_problem(await _post(client, f"/v1/idempotency-keys/{'k' * 256}/void"), 422)
