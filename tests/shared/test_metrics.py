"""Request metrics by route template, counting only what commits, event-loop lag."""

import asyncio
import time

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from mercato_shared.db import after_commit, create_engine, create_sessionmaker, transaction
from mercato_shared.metrics import (
    EVENTS_PROCESSED,
    Children,
    EventLoopLag,
    HttpMetrics,
    event_loop_lag_gauge,
    expose_metrics,
)
from mercato_shared.settings import ServiceSettings
from tests import infra
from tests.apps import client_for


def _value(name, labels):
    return REGISTRY.get_sample_value(name, labels) or 0


async def test_requests_are_counted_by_route_template_not_raw_path():
    app = FastAPI()

    @app.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    app.add_middleware(HttpMetrics, service="metrics-test")
    labels = {"service": "metrics-test", "method": "GET", "route": "/things/{thing_id}"}
    before_ok = _value("mercato_http_requests_total", labels | {"status": "200"})
    before_bad = _value("mercato_http_requests_total", labels | {"status": "422"})
    async with client_for(app) as client:
        for n in range(3):
            assert (await client.get(f"/things/{n}")).status_code == 200
        assert (await client.get("/things/x")).status_code == 422
        assert (await client.get("/nowhere")).status_code == 404
    assert _value("mercato_http_requests_total", labels | {"status": "200"}) == before_ok + 3
    assert _value("mercato_http_requests_total", labels | {"status": "422"}) == before_bad + 1
    unmatched = {"service": "metrics-test", "method": "GET", "route": "unmatched", "status": "404"}
    assert _value("mercato_http_requests_total", unmatched) >= 1


async def test_after_commit_runs_on_commit_only(empty_db):
    engine = create_engine(ServiceSettings(database_url=empty_db))
    sessions = create_sessionmaker(engine)
    seen = []
    try:
        async with transaction(sessions) as session:
            after_commit(session, lambda: seen.append("committed"))

        async def rolled_back():
            async with transaction(sessions) as session:
                after_commit(session, lambda: seen.append("rolled back"))
                raise RuntimeError("undo")

        with pytest.raises(RuntimeError, match="undo"):
            await rolled_back()
    finally:
        await engine.dispose()
    assert seen == ["committed"]


async def test_metrics_are_served_at_the_scrapers_default_path_without_a_redirect():
    app = FastAPI()
    expose_metrics(app)
    async with client_for(app) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "mercato_http_requests_total" in response.text


def test_children_are_made_once_per_label_values():
    outcomes = Children(EVENTS_PROCESSED, "children-test")
    handled = outcomes("order.created", "handled")
    assert outcomes("order.created", "handled") is handled
    assert outcomes("order.created", "duplicate") is not handled
    before = REGISTRY.get_sample_value(
        "mercato_events_processed_total",
        {"service": "children-test", "type": "order.created", "outcome": "handled"},
    )
    handled.inc()
    after = REGISTRY.get_sample_value(
        "mercato_events_processed_total",
        {"service": "children-test", "type": "order.created", "outcome": "handled"},
    )
    assert after == (before or 0) + 1


async def test_event_loop_lag_holds_the_worst_recent_stall_then_forgets_it():
    registry = CollectorRegistry()
    gauge = event_loop_lag_gauge(registry)
    task = EventLoopLag(gauge, service="lag-test", interval=0.02, window=0.2).start()

    def lag() -> float:
        return (
            registry.get_sample_value("mercato_event_loop_lag_seconds", {"service": "lag-test"})
            or 0.0
        )

    try:
        await asyncio.sleep(0.1)
        assert lag() < 0.1
        time.sleep(0.3)  # noqa: ASYNC251 - the stall being measured
        await asyncio.sleep(0.05)
        assert lag() >= 0.25

        # Ten ticks later the stall has left the window.
        async def forgotten() -> bool:
            return lag() < 0.1

        await infra.eventually(forgotten, within=5, interval=0.05)
    finally:
        task.cancel()
