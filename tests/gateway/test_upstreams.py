"""Breakers, retries, load balancing and health checks toward real upstream servers."""

import asyncio

import pytest

from gateway.app import Gateway
from gateway.ratelimit import RatePolicy
from gateway.settings import BreakerSettings, HealthCheckConfig, RouteConfig
from mercato_shared.resilience import BreakerState
from tests.apps import assert_problem, client_for
from tests.gateway.support import EchoServer, settings_for
from tests.infra import eventually

ORDERS = "/api/v1/orders"


@pytest.fixture
async def three():
    async with EchoServer("a") as a, EchoServer("b") as b, EchoServer("c") as c:
        yield a, b, c


def _gateway(keys, dev_secret, instances, **route):
    route.setdefault("health_check", HealthCheckConfig(interval_seconds=60))
    settings = settings_for(
        keys=keys,
        secret_file=dev_secret,
        routes=[RouteConfig(prefix=ORDERS, upstreams=[i.url for i in instances], **route)],
        rate_limits=[
            RatePolicy(name="user", quota=100_000, window_seconds=60),
            RatePolicy(name="anonymous", quota=100, window_seconds=60),
        ],
    )
    return Gateway(settings)


@pytest.fixture
def bearer(dev_token):
    return {"Authorization": f"Bearer {dev_token('alice')}"}


async def test_breaker_opens_fails_fast_half_opens_with_bounded_probes_and_closes(
    keys, dev_secret, three, bearer, stack
):
    upstream = three[0]
    breaker = BreakerSettings(
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=50,
        open_seconds=0.5,
        half_open_probes=2,
    )
    gateway = _gateway(keys, dev_secret, [upstream], breaker=breaker, max_retries=0)
    instance_breaker = next(iter(gateway.upstreams)).instances[0].breaker
    async with client_for(gateway) as client:
        upstream.status = 500
        for _ in range(4):
            assert (await client.get(ORDERS, headers=bearer)).status_code == 500
        assert instance_breaker.state is BreakerState.OPEN

        fast = await client.get(ORDERS, headers=bearer)
        assert_problem(fast, 503)
        assert int(fast.headers["retry-after"]) >= 1
        assert len(upstream.requests) == 4  # failing fast: the instance saw nothing more

        upstream.status, upstream.delay = 200, 0.3

        async def half_open():
            return instance_breaker.state is BreakerState.HALF_OPEN

        await eventually(half_open, within=5, interval=0.05)
        answers = await asyncio.gather(*(client.get(ORDERS, headers=bearer) for _ in range(5)))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 200, 503, 503, 503]  # exactly half_open_probes got through
        assert instance_breaker.state is BreakerState.CLOSED
        upstream.delay = 0
        for _ in range(3):
            assert (await client.get(ORDERS, headers=bearer)).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'gateway_upstream_breaker_transitions_total{instance="' in metrics


async def test_idempotent_requests_retry_elsewhere_but_a_post_is_never_repeated(
    keys, dev_secret, three, bearer, stack
):
    a, b, _ = three
    gateway = _gateway(keys, dev_secret, [a, b], balancer="round_robin")
    async with client_for(gateway) as client:
        a.status = 503
        posted = [await client.post(ORDERS, json={}, headers=bearer) for _ in range(2)]
        assert sorted(p.status_code for p in posted) == [200, 503]
        assert [r["method"] for r in a.requests + b.requests] == ["POST", "POST"]

        for _ in range(4):
            got = await client.get(ORDERS, headers=bearer)
            assert got.status_code == 200
            assert got.json()["upstream"] == "b"
        assert len(b.requests) == 5


async def test_retries_stop_at_the_budget(keys, dev_secret, three, bearer, stack):
    a, b, _ = three
    gateway = _gateway(keys, dev_secret, [a, b], balancer="round_robin")
    for upstream in gateway.upstreams:
        upstream.retry_budget.ratio = 0.0
        upstream.retry_budget.min_per_second = 0.3  # a reserve of 3 retries over 10 s
    async with client_for(gateway) as client:
        a.status = b.status = 503
        for _ in range(6):
            assert (await client.get(ORDERS, headers=bearer)).status_code == 503
    # 6 requests, plus exactly the 3 retries the budget allowed.
    assert len(a.requests) + len(b.requests) == 9


async def test_least_outstanding_balances_three_instances(keys, dev_secret, three, bearer, stack):
    gateway = _gateway(keys, dev_secret, three)
    async with client_for(gateway) as client:

        async def worker(n):
            for _ in range(n):
                assert (await client.get(ORDERS, headers=bearer)).status_code == 200

        await asyncio.gather(*(worker(150) for _ in range(20)))
    counts = [len(instance.requests) for instance in three]
    assert sum(counts) == 3000
    efficiency = 1 - (max(counts) - min(counts)) / (sum(counts) / 3)
    assert efficiency >= 0.95, counts


async def test_unhealthy_instance_gets_no_traffic_until_healthy_again(
    keys, dev_secret, three, bearer, stack
):
    b = three[1]
    check = HealthCheckConfig(interval_seconds=0.05, unhealthy_after=1, healthy_after=2)
    gateway = _gateway(keys, dev_secret, three, health_check=check)
    instance_b = next(iter(gateway.upstreams)).instances[1]
    async with client_for(gateway) as client:
        b.healthy = False

        async def b_ejected():
            return not instance_b.healthy

        await eventually(b_ejected, within=5, interval=0.02)
        before = len(b.requests)
        for _ in range(30):
            assert (await client.get(ORDERS, headers=bearer)).status_code == 200
        assert len(b.requests) == before

        b.healthy = True

        async def b_back():
            return instance_b.healthy

        await eventually(b_back, within=5, interval=0.02)
        for _ in range(30):
            assert (await client.get(ORDERS, headers=bearer)).status_code == 200
        assert len(b.requests) >= before + 5


async def test_rate_limit_per_user_with_headers_and_429(keys, dev_secret, three, dev_token, stack):
    settings = settings_for(
        keys=keys,
        secret_file=dev_secret,
        routes=[RouteConfig(prefix=ORDERS, upstreams=[three[0].url])],
        rate_limits=[
            RatePolicy(name="user", quota=3, window_seconds=60),
            RatePolicy(name="anonymous", quota=1, window_seconds=60),
        ],
    )
    alice = {"Authorization": f"Bearer {dev_token('alice')}"}
    async with client_for(Gateway(settings)) as client:
        first = await client.get(ORDERS, headers=alice)
        assert first.headers["ratelimit-policy"] == '"user";q=3;w=60'
        assert first.headers["ratelimit"].startswith('"user";r=2;t=')
        for _ in range(2):
            assert (await client.get(ORDERS, headers=alice)).status_code == 200
        refused = await client.get(ORDERS, headers=alice)
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        bob = {"Authorization": f"Bearer {dev_token('bob')}"}
        assert (await client.get(ORDERS, headers=bob)).status_code == 200
    assert len(three[0].requests) == 4
