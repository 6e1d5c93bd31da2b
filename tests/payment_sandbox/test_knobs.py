"""The knobs: outages, hangs, latency, their scope, and the runtime configuration endpoint."""

import asyncio
import time

import pytest

from payment_sandbox.settings import SandboxSettings
from tests.apps import assert_problem


async def test_an_outage_answers_503_and_does_nothing(calls):
    await calls.configure(failure_rate=1.0)
    response = await calls.authorize(order_id="o1")
    body = assert_problem(response, 503)
    assert str(body["type"]).endswith("processor-unavailable")
    assert (await calls.ledger("o1"))["authorization_count"] == 0
    await calls.configure(failure_rate=0.0)
    assert (await calls.authorize(order_id="o1")).status_code == 201


async def test_a_hang_does_the_operation_but_keeps_the_answer(calls):
    await calls.configure(timeout_rate=1.0, hang_seconds=30)
    # The caller gives up long before the answer; the authorization is made all the same.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(calls.authorize(order_id="o1"), 0.3)
    ledger = await calls.ledger("o1")
    assert (ledger["authorization_count"], ledger["held"]) == (1, 2500)


async def test_hang_seconds_bounds_the_hang(calls):
    await calls.configure(timeout_rate=1.0, hang_seconds=0.3)
    started = time.monotonic()
    response = await calls.authorize(order_id="o1")
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.3


async def test_latency_delays_every_answer(calls):
    await calls.configure(latency_ms=200, latency_jitter_ms=50)
    started = time.monotonic()
    assert (await calls.authorize()).status_code == 201
    assert time.monotonic() - started >= 0.2


async def test_faults_hit_only_the_chosen_operations(client, calls):
    await calls.configure(failure_rate=1.0, fault_operations=["authorize"])
    assert_problem(await calls.authorize(order_id="o1"), 503)
    await calls.configure(failure_rate=0.0)
    auth = await calls.authorized(order_id="o1")
    await calls.configure(failure_rate=1.0)
    # Capture and key voids are outside the outage.
    capture = await client.post(f"/v1/authorizations/{auth['id']}/capture")
    assert capture.status_code == 200
    assert (await client.post("/v1/idempotency-keys/other/void")).status_code == 200


async def test_a_seed_makes_random_declines_repeatable(calls):
    async def verdicts():
        return [(await calls.authorized())["status"] for _ in range(12)]

    await calls.configure(decline_rate=0.5, seed=42)
    first = await verdicts()
    await calls.configure(seed=42)
    assert await verdicts() == first
    assert set(first) == {"authorized", "declined"}


async def test_config_reads_back_and_keeps_unmentioned_knobs(client, calls):
    config = await calls.configure(latency_ms=5)
    assert config["latency_ms"] == 5
    assert config["decline_over_amount"] == 100_000
    config = await calls.configure(decline_rate=0.25)
    assert (config["latency_ms"], config["decline_rate"]) == (5, 0.25)
    assert (await client.get("/v1/_config")).json() == config


@pytest.mark.parametrize(
    "changes",
    [
        {"failure_rate": 1.5},
        {"decline_rate": -0.1},
        {"latency_ms": -1},
        {"fault_operations": ["teleport"]},
        {"no_such_knob": 1},
        {"latency_ms": 10, "timeout_rate": 2},
    ],
)
async def test_bad_config_is_a_problem_and_changes_nothing(client, changes):
    before = (await client.get("/v1/_config")).json()
    assert_problem(await client.put("/v1/_config", json=changes), 422)
    assert (await client.get("/v1/_config")).json() == before


async def test_bad_config_bodies_are_problems(client):
    assert_problem(await client.put("/v1/_config", json=[1]), 422)
    not_json = {"content-type": "application/json"}
    assert_problem(await client.put("/v1/_config", content=b"{", headers=not_json), 400)


def test_knobs_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SANDBOX_FAILURE_RATE", "0.5")
    monkeypatch.setenv("SANDBOX_FAULT_OPERATIONS", '["capture", "refund"]')
    monkeypatch.setenv("SANDBOX_DATABASE_PATH", str(tmp_path / "x.db"))
    settings = SandboxSettings()
    knobs = settings.knobs()
    assert knobs.failure_rate == 0.5
    assert {str(op) for op in knobs.fault_operations} == {"capture", "refund"}
    assert (settings.host, settings.port) == ("127.0.0.1", 8090)
    assert settings.database_path == tmp_path / "x.db"
