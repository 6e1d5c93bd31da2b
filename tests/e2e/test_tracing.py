"""One order, one trace: gateway → order → Kafka → inventory → payment → order → notification,
as the processes really exported it over OTLP."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.otlp import OtlpReceiver
from tests.infra import eventually

pytestmark = pytest.mark.e2e

WORKERS = ("order-worker", "inventory-worker", "payment-worker", "notification-worker")
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


def _text_of(span) -> str:
    return " ".join([span.name, *(str(value) for value in span.attributes.values())])


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def system_env(receiver):
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


async def test_one_order_is_one_trace_across_every_process(system, receiver, dev_token):
    token = dev_token("tracy")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as client:
        created = await client.post(
            "/api/v1/orders",
            json={"lines": [{"sku": "MUG-BLUE", "quantity": 1}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]

    def spans_of_order():
        return [s for s in receiver.spans if s.attributes.get("mercato.order_id") == order_id]

    async def whole_chain():
        consumers = {s.service for s in spans_of_order() if s.name.endswith(" process")}
        return consumers >= {"inventory-worker", "payment-worker", "notification-worker"}

    await eventually(whole_chain, within=60, interval=0.2)
    trace_ids = {span.trace_id for span in spans_of_order()}
    assert len(trace_ids) == 1
    trace_id = trace_ids.pop()
    in_trace = [span for span in receiver.spans if span.trace_id == trace_id]
    services = {span.service for span in in_trace}
    assert {"gateway", "order-api", *WORKERS} <= services

    by_id = {span.span_id: span for span in in_trace}
    # The outbox keeps the chain: inventory's consumer span is a child of order-worker's
    # publish span, itself a child of the order-api request that wrote the outbox row.
    inventory = next(
        s for s in in_trace if s.service == "inventory-worker" and s.name.endswith(" process")
    )
    publish = by_id[inventory.parent_span_id]
    assert (publish.service, publish.name.endswith(" publish")) == ("order-worker", True)
    assert by_id[publish.parent_span_id].service == "order-api"
    # The sandbox call is a client span inside payment's consumer span.
    assert any(s.service == "payment-worker" and s.kind == 3 for s in in_trace)  # CLIENT

    # One server span per request: FastAPI's own tracing stays off beside the middleware's.
    assert len([s for s in in_trace if s.service == "order-api" and s.kind == 2]) == 1  # SERVER

    # Database statements are spans too, in the api and in every worker's handling.
    queried = {s.service for s in in_trace if s.attributes.get("db.system") == "postgresql"}
    assert {"order-api", *WORKERS} <= queried

    # Probes and scrapes make no traces: they would bury the real ones.
    probes = [s for s in receiver.spans if any(p in _text_of(s) for p in PROBE_PATHS)]
    assert probes == []

    # Log lines carry the same trace id as the spans.
    logged = [
        json.loads(line)
        for name in ("order-api", *WORKERS)
        for line in system.processes[name].log_path.read_text().splitlines()
        if trace_id in line
    ]
    assert logged
    assert all(entry["trace_id"] == trace_id for entry in logged)
