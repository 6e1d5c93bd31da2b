"""GCRA rate limiting in one atomic Redis call, with an in-process fallback for outages."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from gateway.ratelimit.policies import Decision, RatePolicy

log = logging.getLogger(__name__)

OnRedisError = Literal["local", "open", "closed"]

_MICROS = 1_000_000


@functools.cache
def _script_source() -> str:
    return resources.files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")


def redis_client(url: str, *, timeout: float = 0.1, max_connections: int = 100) -> Redis:
    """A Redis client suited to the limiter: short timeouts, one immediate reconnect."""
    # redis-py's default retry policy (10 retries, exponential backoff up to 1 s) would hold
    # a request for seconds while Redis is down; the limiter prefers to fall back at once.
    # Timeouts are not retried: the script may have run, and running it twice would count
    # the request twice. 50-100 ms suits a Redis on the same network; the limiter then
    # costs at most one timeout per probe while Redis hangs.
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        # The default pool fails at once when all its connections are busy, which would
        # look like an outage under load; waiting briefly for a free one is backpressure.
        max_connections=max_connections,
        timeout=timeout,
    )
    return Redis.from_pool(pool)


def gcra(
    tat: int, now: int, *, interval: int, burst: int, cost: int = 1
) -> tuple[bool, int, int, int, int]:
    """One step of gcra.lua's rule: (allowed, new TAT, remaining, reset_after, retry_after)."""
    # Admit iff max(TAT, t) + cost*T - B <= t; all quantities are integer microseconds.
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - burst
    if allow_at <= now:
        return True, new_tat, (burst - (new_tat - now)) // interval, new_tat - now, 0
    return False, tat, (burst - (tat - now)) // interval, tat - now, allow_at - now


class LocalGcra:
    """The same GCRA rule in process memory, on a monotonic clock (per instance limits)."""

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.monotonic_ns,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> TAT in microseconds, ordered from least to most recently admitted.
        self._tats: dict[str, int] = {}
        self._next_sweep = 0

    def __len__(self) -> int:
        return len(self._tats)

    def check(self, policy: RatePolicy, key: str, *, cost: int = 1) -> Decision:
        """Decide one request against ``policy`` for ``key``."""
        _check_cost(policy, cost)
        now = self._clock() // 1000
        allowed, new_tat, remaining, reset_us, retry_us = gcra(
            self._tats.get(key, now),
            now,
            interval=policy.interval_us,
            burst=policy.burst_us,
            cost=cost,
        )
        if allowed:
            if self._tats.pop(key, None) is None:
                self._make_room(now)
            self._tats[key] = new_tat
        return Decision(
            allowed=allowed,
            policy=policy,
            remaining=remaining,
            reset_after=reset_us / _MICROS,
            retry_after=retry_us / _MICROS,
            source="local",
        )

    def _make_room(self, now: int) -> None:
        # An outage with many distinct clients must not grow memory without bound. Expired
        # entries are full buckets and can go; the sweep is O(n), so at most once a second.
        if len(self._tats) < self._max_keys:
            return
        if now >= self._next_sweep:
            self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
            self._next_sweep = now + _MICROS
        # Still full: forget the least recently admitted keys, which only errs permissive.
        while len(self._tats) >= self._max_keys:
            del self._tats[next(iter(self._tats))]


def _check_cost(policy: RatePolicy, cost: int) -> None:
    if not 1 <= cost <= policy.quota:
        raise ValueError(f"cost must be between 1 and the quota ({policy.quota}), got {cost}")


@dataclass(frozen=True)
class _Metrics:
    redis_errors: Counter
    decisions: Counter


# prometheus-client refuses to register a name twice on one registry, yet an application
# (and every test that builds one) may create several limiters: they share the counters.
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = (
    weakref.WeakKeyDictionary()
)


def _metrics(registry: CollectorRegistry) -> _Metrics:
    metrics = _metrics_by_registry.get(registry)
    if metrics is None:
        metrics = _Metrics(
            redis_errors=Counter(
                "gateway_ratelimit_redis_errors_total",
                "Rate-limit checks for which Redis failed or did not answer in time.",
                registry=registry,
            ),
            decisions=Counter(
                "gateway_ratelimit_decisions_total",
                "Rate-limit decisions by policy, outcome and who decided.",
                ["policy", "decision", "source"],
                registry=registry,
            ),
        )
        _metrics_by_registry[registry] = metrics
    return metrics


class RateLimiter:
    """Shared GCRA limits in Redis; while Redis is unreachable, decide per ``on_redis_error``.

    "local" enforces the same policies per process, "open" admits everything and "closed"
    refuses everything. The client should have short socket timeouts (see ``redis_client``).
    While degraded, at most one request per ``probe_interval`` seconds tries Redis, so an
    outage costs one timeout per probe rather than one per request.

    Decisions asked for in one turn of the event loop (concurrent requests) go to Redis in one
    round trip, a pipeline of the script's calls, one per decision and in the order asked, so
    each request still gets its own exact decision.

    A key Redis refused is refused here, without asking, until the time Redis said a request
    would be admitted again: other processes' admissions can only move that time later, so
    the remembered refusal never refuses what Redis would admit (by more than the round
    trip it saves). A client hammering past its limit thus costs no Redis call per request.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        on_redis_error: OnRedisError = "local",
        key_prefix: str = "rl:",
        registry: CollectorRegistry = REGISTRY,
        local: LocalGcra | None = None,
        probe_interval: float = 0.5,
        max_refused: int = 100_000,
    ) -> None:
        self._calls = _ScriptCalls(redis)
        self._on_redis_error = on_redis_error
        self._key_prefix = key_prefix
        self._metrics = _metrics(registry)
        self._local = local if local is not None else LocalGcra()
        self._probe_interval = probe_interval
        self._degraded = False
        self._next_probe = 0.0
        self._decision_counters: dict[tuple[str, bool, str], Counter] = {}
        # key -> (monotonic time a request is admitted again, seconds to full then).
        self._refused: dict[str, tuple[float, float]] = {}
        self._max_refused = max_refused
        self._next_refused_sweep = 0.0

    @property
    def degraded(self) -> bool:
        """Whether the last attempt to reach Redis failed."""
        return self._degraded

    async def check(self, policy: RatePolicy, subject: str, *, cost: int = 1) -> Decision:
        """Decide one request by ``subject`` (a user id or client IP) under ``policy``."""
        _check_cost(policy, cost)
        key = f"{self._key_prefix}{policy.name}:{subject}"
        refused = self._refused.get(key)
        if refused is not None:
            now = time.monotonic()
            if now < refused[0]:
                return self._record(
                    Decision(
                        allowed=False,
                        policy=policy,
                        remaining=0,
                        reset_after=refused[1] + refused[0] - now,
                        retry_after=refused[0] - now,
                        source="cached",
                    )
                )
            del self._refused[key]
        if self._degraded:
            now = time.monotonic()
            if now < self._next_probe:
                return self._record(self._fallback(policy, key, cost))
            # This request is the probe; the others keep using the fallback meanwhile.
            self._next_probe = now + self._probe_interval
        try:
            reply = await self._calls.call(key, (policy.interval_us, policy.burst_us, cost))
        except (RedisError, OSError) as exc:
            self._metrics.redis_errors.inc()
            if not self._degraded:
                self._degraded = True
                self._next_probe = time.monotonic() + self._probe_interval
                log.warning(
                    "Rate limiter cannot reach Redis (%s: %s); deciding %s until it answers",
                    type(exc).__name__,
                    exc,
                    _DEGRADED_MODE[self._on_redis_error],
                )
            return self._record(self._fallback(policy, key, cost))
        if self._degraded:
            self._degraded = False
            log.info("Rate limiter reaches Redis again; limits are shared again")
        allowed, remaining, reset_us, retry_us = (int(value) for value in reply)
        if not allowed and cost == 1:
            # A refusal of a larger cost says nothing of when a single request may pass.
            self._remember_refusal(key, retry_us / _MICROS, (reset_us - retry_us) / _MICROS)
        return self._record(
            Decision(
                allowed=bool(allowed),
                policy=policy,
                remaining=remaining,
                reset_after=reset_us / _MICROS,
                retry_after=retry_us / _MICROS,
                source="redis",
            )
        )

    def _remember_refusal(self, key: str, retry_after: float, full_after_retry: float) -> None:
        now = time.monotonic()
        if len(self._refused) >= self._max_refused:
            # Many refused clients at once: forget the expired ones (a sweep at most once a
            # second), then the oldest; forgetting only costs a Redis call.
            if now >= self._next_refused_sweep:
                self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
                self._next_refused_sweep = now + 1.0
            while len(self._refused) >= self._max_refused:
                del self._refused[next(iter(self._refused))]
        self._refused[key] = (now + retry_after, full_after_retry)

    def _fallback(self, policy: RatePolicy, key: str, cost: int) -> Decision:
        if self._on_redis_error == "local":
            return self._local.check(policy, key, cost=cost)
        allowed = self._on_redis_error == "open"
        return Decision(
            allowed=allowed,
            policy=policy,
            remaining=policy.quota - cost if allowed else 0,
            reset_after=0.0,
            # Nothing is known about the bucket; ask the client back once Redis may be up.
            retry_after=0.0 if allowed else max(1.0, self._probe_interval),
            source="none",
        )

    def _record(self, decision: Decision) -> Decision:
        key = (decision.policy.name, decision.allowed, decision.source)
        counter = self._decision_counters.get(key)
        if counter is None:
            # A labelled child costs a lock and a label tuple to look up; there are few.
            counter = self._decision_counters[key] = self._metrics.decisions.labels(
                policy=decision.policy.name,
                decision="allowed" if decision.allowed else "refused",
                source=decision.source,
            )
        counter.inc()
        return decision


class _ScriptCalls:
    """gcra.lua's calls of one event-loop turn, sent to Redis together.

    The first call of a turn schedules the send for the end of the turn; the calls made
    meanwhile join it. One call goes alone through redis-py's Script (which loads the script
    on NOSCRIPT); several go as one pipeline without MULTI, each answered or failed on its
    own. A pipeline's Script calls would ask SCRIPT EXISTS first, a round trip per send, so
    the pipeline sends EVALSHA and, if Redis lost the script (restarted, flushed), loads it
    and sends again once.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_script_source())
        self._waiting: list[tuple[str, tuple[int, int, int], asyncio.Future[Any]]] = []
        self._sends: set[asyncio.Task[None]] = set()

    async def call(self, key: str, args: tuple[int, int, int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((key, args, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        return await future

    def _send_waiting(self) -> None:
        calls, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(calls))
        # The loop keeps only weak references to tasks.
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(
        self, calls: list[tuple[str, tuple[int, int, int], asyncio.Future[Any]]]
    ) -> None:
        try:
            if len(calls) == 1:
                key, args, _ = calls[0]
                replies: list[Any] = [await self._script(keys=[key], args=list(args))]
            else:
                replies = await self._pipeline([(key, args) for key, args, _ in calls])
        except asyncio.CancelledError:
            for _, _, future in calls:
                future.cancel()
            raise
        except Exception as exc:
            # Every request of the send gets the failure, and decides by the fallback.
            for _, _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(calls, replies, strict=True):
            if future.done():
                continue  # its request was cancelled meanwhile
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _pipeline(self, calls: list[tuple[str, tuple[int, int, int]]]) -> list[Any]:
        replies = await self._evalsha_each(calls)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self._redis.script_load(self._script.script)
            replies = await self._evalsha_each(calls)
        return replies

    async def _evalsha_each(self, calls: list[tuple[str, tuple[int, int, int]]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for key, args in calls:
            pipe.evalsha(self._script.sha, 1, key, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


_DEGRADED_MODE: dict[OnRedisError, str] = {
    "local": "with per-instance limits",
    "open": "to admit every request",
    "closed": "to refuse every request",
}
