"""The saga end to end through real processes: gateway, four services, sandbox, mail."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mercato_ops.check import run_check
from mercato_ops.demo import run_demo
from tests.infra import eventually

pytestmark = pytest.mark.e2e


async def _order(client, lines, token):
    response = await client.post(
        "/api/v1/orders", json={"lines": lines}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _terminal(client, order_id, token):
    async def ended():
        order = (
            await client.get(
                f"/api/v1/orders/{order_id}", headers={"Authorization": f"Bearer {token}"}
            )
        ).json()
        return order if order["status"] != "PENDING" else None

    return await eventually(ended, within=30, interval=0.1)


async def test_confirmation_rejection_and_decline(system, dev_token):
    alice = dev_token("alice")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        confirmed = await _order(client, [{"sku": "MUG-BLUE", "quantity": 2}], alice)
        rejected = await _order(client, [{"sku": "SOLD-OUT", "quantity": 1}], alice)
        declined = await _order(client, [{"sku": "WATCH-GOLD", "quantity": 1}], alice)
        order = await _terminal(client, confirmed, alice)
        assert (order["status"], order["amount"]) == ("CONFIRMED", 2500)
        assert [h["step"] for h in order["history"]] == ["created", "reserved", "confirmed"]
        assert (await _terminal(client, rejected, alice))["cancel_reason"] == "out_of_stock"
        assert (await _terminal(client, declined, alice))["cancel_reason"] == "payment_declined"

        async def notified():
            details = (
                await client.get(
                    f"/api/v1/orders/{confirmed}/details",
                    headers={"Authorization": f"Bearer {alice}"},
                )
            ).json()
            return details if details["notifications"] else None

        details = await eventually(notified, within=30)
        assert details["missing"] == []
        assert details["payment"]["status"] == "CAPTURED"
        assert details["notifications"][0]["order_id"] == confirmed
        stock = (await client.get("/api/v1/products/MUG-BLUE")).json()
        assert stock["available"] == 498

    async def all_checked():
        report = await run_check(system.ops_settings())
        return report if report.ok else None

    await eventually(all_checked, within=30, interval=0.5)


async def test_demo_mix_ends_terminal_and_check_is_green(system, dev_secret):
    outcomes = await run_demo(system.gateway_url, 60, secret_file=dev_secret, within=120)
    reasons = {o.reason for o in outcomes}
    assert {o.status for o in outcomes} == {"CONFIRMED", "CANCELLED"}
    assert {"out_of_stock", "payment_declined"} <= reasons

    async def all_checked():
        report = await run_check(system.ops_settings())
        return report if report.ok else None

    report = await eventually(all_checked, within=30, interval=0.5)
    assert report.counts["CONFIRMED"] + report.counts["CANCELLED"] >= 60

    # Each process's /metrics agrees with the run: outcomes add up to the orders that ended.
    order_api, order_worker = (
        await _metrics(system, "order-api"),
        await _metrics(system, "order-worker"),
    )
    ended = {
        status: _sum(order_api, "mercato_saga_outcomes_total", status=status)
        + _sum(order_worker, "mercato_saga_outcomes_total", status=status)
        for status in ("CONFIRMED", "CANCELLED")
    }
    assert ended == {s: report.counts[s] for s in ("CONFIRMED", "CANCELLED")}
    assert _sum(order_api, "mercato_http_requests_total", route="/api/v1/orders") >= 60
    inventory = await _metrics(system, "inventory-worker")
    handled = _sum(inventory, "mercato_events_processed_total", type="order.created")
    assert handled == report.counts["CONFIRMED"] + report.counts["CANCELLED"]
    assert {"mercato_outbox_backlog", "mercato_consumer_lag"} <= {f.name for f in inventory}

    async def drained():
        # Gauges are sampled once per relay round and consumer batch.
        families = await _metrics(system, "inventory-worker")
        lag = _sum(families, "mercato_consumer_lag")
        return lag == 0 and _sum(families, "mercato_outbox_backlog") == 0

    await eventually(drained, within=10, interval=0.2)
    payment = await _metrics(system, "payment-worker")
    assert _sum(payment, "mercato_breaker_state", dependency="payment-sandbox") == 0
    gateway = await _metrics(system, "gateway")
    assert _sum(gateway, "gateway_requests_total", route="/api/v1/orders") >= 60


async def _metrics(system, name):
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(
            f"http://127.0.0.1:{system.processes[name].health_port}/metrics"
        )
    response.raise_for_status()
    return list(text_string_to_metric_families(response.text))


def _sum(families, sample_name, **labels):
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == sample_name
        and all(sample.labels.get(key) == value for key, value in labels.items())
    )
