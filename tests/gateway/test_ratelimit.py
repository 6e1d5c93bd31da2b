"""The gateway's GCRA rate limiter against real Redis servers, outages included."""

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.ratelimit import (
    Decision,
    LocalGcra,
    RateLimiter,
    RatePolicy,
    gcra,
    rate_limit_headers,
    redis_client,
)
from tests.gateway.support import CountingConnection
from tests.infra import eventually, free_port, random_prefix

SHARED_REDIS = os.environ.get("MERCATO_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIS_SERVER = "/usr/bin/redis-server"
LOGGER = "gateway.ratelimit"


async def redis_now_us(client: Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1_000_000 + int(micros)


async def until_redis_time(client: Redis, target_us: int, *, within: float = 5.0) -> None:
    """Wait until Redis's clock reads ``target_us`` or later."""
    deadline = time.monotonic() + within
    while (now := await redis_now_us(client)) < target_us:
        assert time.monotonic() < deadline, "Redis's clock did not reach the target in time"
        await asyncio.sleep(min(0.01, (target_us - now) / 1e6))


def us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def log_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith(LOGGER) and r.levelno == level
    ]


class RedisServer:
    """A redis-server of the test's own, to stop and start at will."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--daemonize", "no", "--dir", self.directory),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await eventually(self.ping, within=10, interval=0.01)

    async def ping(self) -> bool:
        client = Redis.from_url(self.url)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 10)
        self.process = None


@pytest.fixture
async def redis_server(tmp_path) -> AsyncIterator[RedisServer]:
    server = RedisServer(str(tmp_path))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def shared_redis(stack) -> AsyncIterator[Redis]:
    # A roomier timeout than production's: 200 connections open at once in one test.
    client = redis_client(SHARED_REDIS, timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


# --- the rule itself -------------------------------------------------------------------------


def test_policy_intervals_and_validation():
    policy = RatePolicy(name="orders-write", quota=100, window_seconds=60)
    assert (policy.interval_us, policy.burst_us) == (600_000, 60_000_000)
    # 10 s / 3 does not split into whole microseconds: round the interval up, burst follows.
    odd = RatePolicy(name="odd", quota=3, window_seconds=10)
    assert (odd.interval_us, odd.burst_us) == (3_333_334, 10_000_002)
    for bad in ({"name": 'q"uote'}, {"name": "a:b"}, {"quota": 0}, {"window_seconds": 0}):
        with pytest.raises(ValidationError):
            RatePolicy.model_validate({"name": "user", "quota": 1, "window_seconds": 1, **bad})


def test_gcra_rule_q_at_once_then_one_per_interval():
    interval, burst = 200_000, 1_000_000  # quota 5 per second
    tat, now = 0, 10_000_000
    for admitted in range(5):
        allowed, tat, remaining, reset, retry = gcra(tat, now, interval=interval, burst=burst)
        assert (allowed, remaining, retry) == (True, 4 - admitted, 0)
        assert reset == (admitted + 1) * interval
    assert gcra(tat, now, interval=interval, burst=burst) == (False, tat, 0, burst, interval)
    # Admitted exactly when max(TAT, t) + T - B <= t, not a microsecond earlier.
    assert not gcra(tat, now + interval - 1, interval=interval, burst=burst)[0]
    later = now + interval
    assert gcra(tat, later, interval=interval, burst=burst)[:3] == (True, tat + interval, 0)


def test_local_gcra_enforces_the_rule_on_its_clock():
    clock = [5_000_000_000]  # nanoseconds
    local = LocalGcra(clock=lambda: clock[0])
    policy = RatePolicy(name="user", quota=5, window_seconds=1)
    for admitted in range(5):
        decision = local.check(policy, "k")
        assert (decision.allowed, decision.source) == (True, "local")
        assert decision.remaining == 4 - admitted
        assert us(decision.reset_after) == (admitted + 1) * 200_000
    refused = local.check(policy, "k")
    assert (refused.allowed, refused.remaining, us(refused.retry_after)) == (False, 0, 200_000)
    clock[0] += 199_999_000
    assert us(local.check(policy, "k").retry_after) == 1
    clock[0] += 1_000
    assert local.check(policy, "k").allowed
    assert not local.check(policy, "k").allowed
    # Idle for a whole window: full again, q at once and no more.
    clock[0] += 1_000_000_000
    assert [local.check(policy, "k").allowed for _ in range(6)] == [True] * 5 + [False]


def test_local_gcra_stays_bounded():
    clock = [0]
    local = LocalGcra(clock=lambda: clock[0], max_keys=3)
    policy = RatePolicy(name="user", quota=2, window_seconds=1)
    for key in "abcd":
        local.check(policy, key)
    assert len(local) == 3
    # The least recently admitted key ("a") went: its bucket is full again.
    assert local.check(policy, "a").remaining == 1
    clock[0] += 2_000_000_000
    local.check(policy, "e")
    assert len(local) == 1  # every other bucket had drained and was swept


def test_cost_must_fit_the_quota():
    policy = RatePolicy(name="user", quota=2, window_seconds=1)
    for cost in (0, 3):
        with pytest.raises(ValueError, match="cost"):
            LocalGcra().check(policy, "k", cost=cost)


# --- headers ---------------------------------------------------------------------------------


def test_headers_for_admitted_refused_and_unmeasured_decisions():
    user = RatePolicy(name="user", quota=100, window_seconds=60)
    writes = RatePolicy(name="orders-write", quota=10, window_seconds=1)
    admitted = Decision(True, user, remaining=42, reset_after=16.2, retry_after=0.0, source="redis")
    assert rate_limit_headers(admitted) == [
        (b"ratelimit-policy", b'"user";q=100;w=60'),
        (b"ratelimit", b'"user";r=42;t=17'),
    ]
    refused = Decision(False, writes, remaining=0, reset_after=1, retry_after=0.01, source="local")
    assert rate_limit_headers(admitted, refused) == [
        (b"ratelimit-policy", b'"user";q=100;w=60, "orders-write";q=10;w=1'),
        (b"ratelimit", b'"user";r=42;t=17, "orders-write";r=0;t=1'),
        (b"retry-after", b"1"),
    ]
    closed = Decision(False, user, remaining=0, reset_after=0.0, retry_after=2.5, source="none")
    assert rate_limit_headers(closed) == [
        (b"ratelimit-policy", b'"user";q=100;w=60'),
        (b"retry-after", b"3"),
    ]
    assert rate_limit_headers() == []


# --- Redis -----------------------------------------------------------------------------------


async def test_concurrent_burst_admits_exactly_what_the_rule_allows(shared_redis, registry):
    prefix = random_prefix()
    limiter = RateLimiter(shared_redis, key_prefix=prefix, registry=registry)
    policy = RatePolicy(name="burst", quota=50, window_seconds=10)
    interval = policy.interval_us

    before = await redis_now_us(shared_redis)
    decisions = await asyncio.gather(*(limiter.check(policy, "one-key") for _ in range(200)))
    after = await redis_now_us(shared_redis)

    # 200 requests against a pool of 100 connections: they wait for one, no fallback.
    assert {d.source for d in decisions} == {"redis"}
    admitted = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    # Every request arrived within [before, after] by Redis's clock: a full bucket admits q,
    # and at most one more per interval that elapsed meanwhile.
    assert policy.quota <= len(admitted) <= policy.quota + (after - before) // interval
    # The stored TAT accounts for exactly the admitted requests, from a start in the window.
    tat = int(await shared_redis.get(f"{prefix}burst:one-key"))
    assert before + len(admitted) * interval <= tat <= after + len(admitted) * interval
    for decision in refused:
        assert 0 < us(decision.retry_after) <= interval
        assert decision.remaining == 0
    # The admission that wrote the final TAT reported the time until it drains.
    assert tat - after <= max(us(d.reset_after) for d in admitted) <= tat - before

    first = max(admitted, key=lambda d: d.remaining)
    assert (first.remaining, us(first.reset_after)) == (policy.quota - 1, interval)
    assert rate_limit_headers(first) == [
        (b"ratelimit-policy", b'"burst";q=50;w=10'),
        (b"ratelimit", b'"burst";r=49;t=1'),
    ]
    if len(admitted) == policy.quota:  # no refill meanwhile (the usual case): exact counts
        assert sorted(d.remaining for d in admitted) == list(range(policy.quota))
        last = min(admitted, key=lambda d: d.remaining)
        assert rate_limit_headers(last)[1] == (b"ratelimit", b'"burst";r=0;t=10')
    assert rate_limit_headers(refused[0]) == [
        (b"ratelimit-policy", b'"burst";q=50;w=10'),
        (b"ratelimit", b'"burst";r=0;t=10'),
        (b"retry-after", b"1"),
    ]
    assert registry.get_sample_value(
        "gateway_ratelimit_decisions_total",
        {"policy": "burst", "decision": "refused", "source": "redis"},
    ) == len(refused)


async def test_capacity_returns_as_the_rule_says(shared_redis, registry):
    prefix = random_prefix()
    limiter = RateLimiter(shared_redis, key_prefix=prefix, registry=registry)
    policy = RatePolicy(name="small", quota=5, window_seconds=1)
    interval = policy.interval_us

    before = await redis_now_us(shared_redis)
    burst = [await limiter.check(policy, "k") for _ in range(5)]
    refused = await limiter.check(policy, "k")
    after = await redis_now_us(shared_redis)
    assert [d.allowed for d in burst] == [True] * 5
    assert [d.remaining for d in burst] == [4, 3, 2, 1, 0]
    assert not refused.allowed
    assert interval - (after - before) <= us(refused.retry_after) <= interval
    # The key lives as long as its TAT matters: until the bucket is full again.
    assert 0 < await shared_redis.pttl(f"{prefix}small:k") <= math.ceil(policy.burst_us / 1000)

    # One interval after the refusal (an upper bound on its time), exactly one more fits.
    await until_redis_time(shared_redis, after + us(refused.retry_after))
    again = await limiter.check(policy, "k")
    assert (again.allowed, again.remaining) == (True, 0)
    assert not (await limiter.check(policy, "k")).allowed

    # Once reset_after has passed, the whole quota is available at once again.
    checked = await redis_now_us(shared_redis)
    await until_redis_time(shared_redis, checked + us(again.reset_after))
    refill = [await limiter.check(policy, "k") for _ in range(6)]
    assert [d.allowed for d in refill] == [True] * 5 + [False]


async def test_keys_are_isolated(shared_redis, registry):
    prefix = random_prefix()
    limiter = RateLimiter(shared_redis, key_prefix=prefix, registry=registry)
    user = RatePolicy(name="user", quota=2, window_seconds=60)
    writes = RatePolicy(name="orders-write", quota=2, window_seconds=60)
    assert [(await limiter.check(user, "alice")).allowed for _ in range(3)] == [True, True, False]
    assert (await limiter.check(user, "bob")).remaining == 1
    assert (await limiter.check(writes, "alice")).remaining == 1
    other_gateway = RateLimiter(shared_redis, key_prefix=random_prefix(), registry=registry)
    assert (await other_gateway.check(user, "alice")).remaining == 1


async def test_cost_counts_several_requests(shared_redis, registry):
    limiter = RateLimiter(shared_redis, key_prefix=random_prefix(), registry=registry)
    policy = RatePolicy(name="user", quota=5, window_seconds=60)
    first, second, third = [await limiter.check(policy, "k", cost=2) for _ in range(3)]
    assert (first.remaining, second.remaining) == (3, 1)
    assert (third.allowed, third.remaining) == (False, 1)
    assert (await limiter.check(policy, "k")).remaining == 0


async def test_one_round_trip_per_decision(redis_server, registry):
    class CountingRedis(Redis):
        commands: list[str]

        async def execute_command(self, *args, **options):
            self.commands.append(str(args[0]))
            return await super().execute_command(*args, **options)

    client = CountingRedis(host="127.0.0.1", port=redis_server.port)
    client.commands = []
    admin = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        limiter = RateLimiter(client, key_prefix=random_prefix(), registry=registry)
        policy = RatePolicy(name="user", quota=100, window_seconds=60)
        # A server without the script (restarted, flushed) gets it loaded transparently.
        await admin.script_flush()
        assert (await limiter.check(policy, "k")).source == "redis"
        assert client.commands == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]

        client.commands.clear()
        await admin.config_resetstat()
        for _ in range(20):
            await limiter.check(policy, "k")
        assert client.commands == ["EVALSHA"] * 20
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 20
        assert not {"cmdstat_eval", "cmdstat_script|load"} & stats.keys()
    finally:
        await client.aclose()
        await admin.aclose()


async def test_decisions_of_one_loop_turn_share_one_round_trip(redis_server, registry):
    client = redis_client(redis_server.url, timeout=2.0)
    client.connection_pool.connection_class = CountingConnection
    admin = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        limiter = RateLimiter(client, key_prefix=random_prefix(), registry=registry)
        policy = RatePolicy(name="small", quota=3, window_seconds=60)
        await limiter.check(policy, "warm-up")  # the connection's own handshake
        await admin.config_resetstat()
        CountingConnection.writes = 0
        # 50 requests at once: ten clients, five requests each, so each client's quota of 3
        # admits its first three and refuses the other two, in the order they were asked.
        decisions = await asyncio.gather(
            *(limiter.check(policy, f"client-{i % 10}") for i in range(50))
        )
        assert CountingConnection.writes == 1
        stats = await admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 50
        for client_no in range(10):
            mine = decisions[client_no::10]
            assert [d.allowed for d in mine] == [True, True, True, False, False]
            assert [d.remaining for d in mine[:3]] == [2, 1, 0]
            assert {d.source for d in mine} == {"redis"}
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_batch_reloads_a_script_redis_lost(redis_server, registry):
    client = redis_client(redis_server.url, timeout=2.0)
    admin = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        limiter = RateLimiter(client, key_prefix=random_prefix(), registry=registry)
        policy = RatePolicy(name="user", quota=100, window_seconds=60)
        await admin.script_flush()
        await admin.config_resetstat()
        decisions = await asyncio.gather(*(limiter.check(policy, "k") for _ in range(10)))
        assert [d.remaining for d in decisions] == list(range(99, 89, -1))
        assert {d.source for d in decisions} == {"redis"}
        stats = await admin.info("commandstats")
        assert stats["cmdstat_script|load"]["calls"] == 1
        # Ten refused by NOSCRIPT, ten answered: none counted twice.
        assert stats["cmdstat_evalsha"]["calls"] == 20
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_batch_redis_cannot_answer_falls_back_for_each_request(redis_server, registry):
    client = redis_client(redis_server.url, timeout=0.1)
    try:
        limiter = RateLimiter(client, key_prefix=random_prefix(), registry=registry)
        policy = RatePolicy(name="user", quota=3, window_seconds=60)
        await redis_server.stop()
        decisions = await asyncio.gather(*(limiter.check(policy, "k") for _ in range(5)))
        assert [(d.allowed, d.source) for d in decisions] == [(True, "local")] * 3 + [
            (False, "local")
        ] * 2
        assert limiter.degraded
    finally:
        await client.aclose()


async def test_a_refused_key_is_refused_without_redis_until_its_retry_time(redis_server, registry):
    client = Redis.from_url(redis_server.url)
    admin = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        limiter = RateLimiter(client, key_prefix=random_prefix(), registry=registry)
        policy = RatePolicy(name="small", quota=2, window_seconds=1)
        assert [(await limiter.check(policy, "k")).allowed for _ in range(2)] == [True, True]
        refused = await limiter.check(policy, "k")
        assert (refused.allowed, refused.source) == (False, "redis")

        await admin.config_resetstat()
        remembered = [await limiter.check(policy, "k") for _ in range(20)]
        assert {(d.allowed, d.source) for d in remembered} == {(False, "cached")}
        assert all(0 < d.retry_after <= refused.retry_after for d in remembered)
        assert all(d.retry_after < d.reset_after for d in remembered)
        assert "cmdstat_evalsha" not in await admin.info("commandstats")
        # Another key still asks Redis.
        assert (await limiter.check(policy, "other")).source == "redis"

        # At its retry time the key is Redis's to decide again, and one request fits.
        async def admitted_again() -> bool:
            decision = await limiter.check(policy, "k")
            return decision.allowed and decision.source == "redis"

        await eventually(admitted_again, within=5, interval=0.05)
    finally:
        await client.aclose()
        await admin.aclose()


async def test_local_fallback_during_an_outage_and_recovery(redis_server, registry, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = redis_client(redis_server.url, timeout=0.1)
    other_client = redis_client(redis_server.url, timeout=0.1)
    limiter = RateLimiter(client, registry=registry, probe_interval=0.05)
    policy = RatePolicy(name="user", quota=3, window_seconds=60)

    def errors() -> float:
        return registry.get_sample_value("gateway_ratelimit_redis_errors_total") or 0.0

    try:
        assert (await limiter.check(policy, "alice")).source == "redis"
        await redis_server.stop()

        started = time.monotonic()
        outage = [await limiter.check(policy, "bob") for _ in range(4)]
        assert time.monotonic() - started < 1.0  # no retry backoff stalls the requests
        assert [(d.allowed, d.source) for d in outage] == [(True, "local")] * 3 + [(False, "local")]
        assert outage[-1].retry_after > 0
        assert limiter.degraded

        # Keep deciding until several probes have failed: still one warning in all.
        async def probes_failed() -> bool:
            decision = await limiter.check(policy, "carol")
            assert decision.source == "local"
            outage.append(decision)
            return errors() >= 3

        await eventually(probes_failed, within=5, interval=0.02)
        assert len(log_lines(caplog, logging.WARNING)) == 1
        assert "per-instance limits" in log_lines(caplog, logging.WARNING)[0]
        assert registry.get_sample_value(
            "gateway_ratelimit_decisions_total",
            {"policy": "user", "decision": "refused", "source": "local"},
        ) == sum(1 for d in outage if not d.allowed)
        assert log_lines(caplog, logging.INFO) == []

        await redis_server.start()

        async def from_redis() -> Decision | None:
            decision = await limiter.check(policy, "dave")
            return decision if decision.source == "redis" else None

        await eventually(from_redis, within=5, interval=0.02)
        assert not limiter.degraded
        assert len(log_lines(caplog, logging.INFO)) == 1
        assert len(log_lines(caplog, logging.WARNING)) == 1

        # Two gateways share one quota again.
        other = RateLimiter(other_client, registry=registry)
        shared = [
            await gateway.check(policy, "erin")
            for gateway in (limiter, other, limiter, other, limiter)
        ]
        assert [d.allowed for d in shared] == [True, True, True, False, False]
        assert {d.source for d in shared} == {"redis"}
    finally:
        await client.aclose()
        await other_client.aclose()


@pytest.mark.parametrize(("mode", "allowed"), [("open", True), ("closed", False)])
async def test_open_and_closed_modes(redis_server, registry, caplog, mode, allowed):
    caplog.set_level(logging.INFO, logger=LOGGER)
    client = redis_client(redis_server.url, timeout=0.1)
    limiter = RateLimiter(client, on_redis_error=mode, registry=registry, probe_interval=0.05)
    policy = RatePolicy(name="anonymous", quota=1, window_seconds=60)
    try:
        await redis_server.stop()
        decisions = [await limiter.check(policy, "203.0.113.9") for _ in range(5)]
        assert {(d.allowed, d.source) for d in decisions} == {(allowed, "none")}
        headers = dict(rate_limit_headers(decisions[0]))
        assert headers[b"ratelimit-policy"] == b'"anonymous";q=1;w=60'
        assert b"ratelimit" not in headers  # nothing was measured
        assert (b"retry-after" in headers) is not allowed
        assert len(log_lines(caplog, logging.WARNING)) == 1
        assert (registry.get_sample_value("gateway_ratelimit_redis_errors_total") or 0) >= 1

        await redis_server.start()

        async def from_redis() -> Decision | None:
            decision = await limiter.check(policy, "198.51.100.7")
            return decision if decision.source == "redis" else None

        assert (await eventually(from_redis, within=5, interval=0.02)).allowed
    finally:
        await client.aclose()


async def test_a_silent_redis_times_out_quickly(registry, caplog):
    # Accepts connections and never answers, like a hung server or a black-holed route.
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = redis_client(f"redis://127.0.0.1:{port}/0", timeout=0.1)
    limiter = RateLimiter(client, registry=registry)
    policy = RatePolicy(name="user", quota=1, window_seconds=60)
    try:
        started = time.monotonic()
        decision = await limiter.check(policy, "alice")
        assert time.monotonic() - started < 1.0
        assert (decision.allowed, decision.source) == (True, "local")
        assert registry.get_sample_value("gateway_ratelimit_redis_errors_total") == 1
    finally:
        await client.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_limiters_share_counters_on_one_registry(registry):
    client = Redis.from_url(SHARED_REDIS)
    # Building a second limiter (a second app in the same process) must not raise.
    for target in (registry, registry, None, None):
        if target is None:
            RateLimiter(client)
        else:
            RateLimiter(client, registry=target)
    await client.aclose()
