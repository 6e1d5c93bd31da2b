"""The ledger: per-order sums, the paged list, and persistence across restarts."""

import signal
import uuid

import httpx

from payment_sandbox.app import create_app
from tests.apps import assert_problem, client_for
from tests.e2e.processes import Process
from tests.infra import free_port


async def test_sums_per_order(client, calls):
    order_id = str(uuid.uuid4())
    # Three attempts at one order: declined, then voided, then captured and partly refunded.
    await calls.authorize(order_id=order_id, amount=200_000, key="a1")
    voided = await calls.authorized(order_id=order_id, amount=1500, key="a2")
    await client.post(f"/v1/authorizations/{voided['id']}/void")
    captured = await calls.captured(order_id=order_id, amount=1500, key="a3")
    await calls.refund(captured["id"], 400)
    held = await calls.authorized(order_id=order_id, amount=700, key="a4")

    ledger = await calls.ledger(order_id)
    assert ledger == {
        "order_id": order_id,
        "currency": "EUR",
        "authorization_count": 4,
        "declined_count": 1,
        "authorized": 1500 + 1500 + 700,
        "held": 700,
        "captured": 1500,
        "voided": 1500,
        "refunded": 400,
        "charged": 1100,
        "authorizations": ledger["authorizations"],
    }
    assert [a["idempotency_key"] for a in ledger["authorizations"]] == ["a1", "a2", "a3", "a4"]
    assert ledger["authorizations"][3]["id"] == held["id"]


async def test_an_unknown_order_has_an_empty_ledger(calls):
    ledger = await calls.ledger("never-seen")
    assert ledger["authorization_count"] == ledger["charged"] == 0
    assert ledger["authorizations"] == []
    assert ledger["currency"] is None


async def test_every_order_page_by_page(client, calls):
    order_ids = sorted(str(uuid.uuid4()) for _ in range(5))
    for order_id in order_ids:
        await calls.captured(order_id=order_id, amount=100)
    seen, after, pages = [], "", 0
    while True:
        response = await client.get("/v1/ledger", params={"limit": 2, "after": after})
        page = response.json()
        pages += 1
        seen += [(item["order_id"], item["charged"]) for item in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == [(order_id, 100) for order_id in order_ids]
    assert pages == 3


async def test_bad_ledger_queries_are_problems(client):
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"order_id": ""}):
        assert_problem(await client.get("/v1/ledger", params=params), 422)


async def test_the_ledger_survives_a_restart(sandbox_settings, calls):
    auth = await calls.captured(amount=900)
    async with client_for(create_app(sandbox_settings)) as second:
        response = await second.get("/v1/ledger", params={"order_id": auth["order_id"]})
        assert response.json()["charged"] == 900
        again = await second.post(
            "/v1/authorizations",
            json={"order_id": auth["order_id"], "amount": 900, "currency": "EUR"},
            headers={"Idempotency-Key": auth["idempotency_key"]},
        )
        assert again.status_code == 200
        assert again.json()["id"] == auth["id"]


async def _run_sandbox(env, tmp_path, body):
    """Run the console script until ``body(client)`` is done; returns its exit code."""
    process = Process("payment-sandbox", env, health_port=int(env["SANDBOX_PORT"]), logs=tmp_path)
    process.start()
    try:
        await process.wait_ready("/readyz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['SANDBOX_PORT']}") as client:
            await body(client)
    finally:
        code = process.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit too.
    assert code in (0, -signal.SIGTERM), process.tail()
    assert "Application shutdown complete" in process.tail()


async def test_the_console_script_keeps_its_ledger_across_restarts(tmp_path):
    env = {
        "SANDBOX_PORT": str(free_port()),
        "SANDBOX_DATABASE_PATH": str(tmp_path / "ledger" / "sandbox.db"),
        "SANDBOX_DECLINE_OVER_AMOUNT": "50",
    }

    async def first_run(client):
        assert (await client.get("/v1/_config")).json()["decline_over_amount"] == 50
        for amount, key in ((51, "k1"), (50, "k2")):
            response = await client.post(
                "/v1/authorizations",
                json={"order_id": "o1", "amount": amount, "currency": "EUR"},
                headers={"Idempotency-Key": key},
            )
            assert response.status_code == 201

    async def second_run(client):
        ledger = (await client.get("/v1/ledger", params={"order_id": "o1"})).json()
        assert (ledger["authorization_count"], ledger["declined_count"]) == (2, 1)
        assert ledger["held"] == 50

    await _run_sandbox(env, tmp_path, first_run)
    await _run_sandbox(env, tmp_path, second_run)
