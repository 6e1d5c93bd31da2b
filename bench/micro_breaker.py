"""Per-call cost of the resilience guards around an async no-op, timeit-style.

Each path is the way production code composes the guards, minus the network: the gateway's
(bulkhead, retry budget, instance pick through its breaker, permit settled) and the payment
service's (retry with a budget around ``CircuitBreaker.call``). The no-op never suspends, so
a path's time is the CPU its guards cost the event loop on every call.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import HttpUrl

from gateway.settings import BreakerSettings, RouteConfig
from gateway.upstreams import NoInstanceError, Upstream
from mercato_shared.resilience import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    RetryBudget,
    RetryPolicy,
    retry,
)

# timeit's habit: grow the loop until one run lasts long enough to dwarf the clock's
# resolution, then keep the best of several runs (noise only ever adds time).
MIN_RUN_SECONDS = 0.1
REPEATS = 7

Path = Callable[[], Awaitable[None]]


async def _noop() -> None:
    return None


def _never_retry(exc: BaseException) -> bool:
    return False


async def _run(path: Path, iterations: int) -> float:
    # The collector is off while timing, as timeit does, so one run does not pay for the
    # garbage of another.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(iterations):
            await path()
        return time.perf_counter() - started
    finally:
        if gc_was_enabled:
            gc.enable()


async def time_path(path: Path) -> dict[str, Any]:
    """Nanoseconds per call of ``path``: best and median of ``REPEATS`` runs."""
    iterations = 1000
    while (elapsed := await _run(path, iterations)) < MIN_RUN_SECONDS:
        iterations = int(iterations * max(2.0, 1.2 * MIN_RUN_SECONDS / max(elapsed, 1e-6)))
    runs = sorted([await _run(path, iterations) for _ in range(REPEATS)])
    per_call = [run / iterations * 1e9 for run in runs]
    return {
        "ns_per_call": round(per_call[0], 1),
        "median_ns_per_call": round(per_call[len(per_call) // 2], 1),
        "iterations": iterations,
        "repeats": REPEATS,
    }


def _upstream() -> Upstream:
    # One instance: the pick's cost grows with the instances it sorts; one isolates the guards.
    # A long open time keeps an ejected instance ejected for the whole measurement.
    route = RouteConfig(
        prefix="/bench",
        upstreams=[HttpUrl("http://127.0.0.1:9")],
        breaker=BreakerSettings(open_seconds=3600),
    )
    return Upstream(route, retry_budget=RetryBudget())


def _opened(breaker: CircuitBreaker) -> CircuitBreaker:
    # Failures open it the way production traffic would, once the window can decide.
    while breaker.state is BreakerState.CLOSED:
        breaker.acquire().failure()
    return breaker


def paths() -> dict[str, tuple[str, Path]]:
    """Label and coroutine function of every measured path, the bare await first."""
    breaker = CircuitBreaker("bench")
    bulkhead = Bulkhead("bench", max_concurrent=256)
    gateway = _upstream()
    budget = RetryBudget()
    policy = RetryPolicy()
    open_breaker = _opened(CircuitBreaker("bench-open", BreakerConfig(open_duration=3600)))
    ejected = _upstream()
    _opened(ejected.instances[0].breaker)

    async def direct() -> None:
        await _noop()

    async def breaker_call() -> None:
        await breaker.call(_noop)

    async def bulkhead_breaker() -> None:
        async with bulkhead:
            await breaker.call(_noop)

    async def gateway_path() -> None:
        # proxy.Forwarder's order: bulkhead, budget deposit, pick (breaker permit), outcome.
        async with gateway.bulkhead:
            gateway.retry_budget.record_request()
            instance, permit = gateway.pick(set())
            instance.outstanding += 1
            try:
                await _noop()
                permit.success()
            finally:
                instance.outstanding -= 1

    async def payment_path() -> None:
        # SandboxClient._request: retry with a budget around the breaker-guarded call.
        await retry(
            lambda: breaker.call(_noop), policy=policy, budget=budget, retryable=_never_retry
        )

    async def open_rejected() -> None:
        try:
            await open_breaker.call(_noop)
        except BreakerOpenError:
            pass

    async def gateway_ejected() -> None:
        try:
            async with ejected.bulkhead:
                ejected.retry_budget.record_request()
                ejected.pick(set())
        except NoInstanceError:
            pass

    return {
        "direct": ("await no-op", direct),
        "breaker": ("CircuitBreaker.call, closed", breaker_call),
        "bulkhead_breaker": ("Bulkhead + CircuitBreaker.call", bulkhead_breaker),
        "gateway_path": ("gateway: bulkhead + budget + pick + permit", gateway_path),
        "payment_path": ("payment: retry + budget + CircuitBreaker.call", payment_path),
        "breaker_open": ("CircuitBreaker.call, open (rejected)", open_rejected),
        "gateway_ejected": ("gateway: only instance ejected (503)", gateway_ejected),
    }


async def measure() -> dict[str, Any]:
    """Nanoseconds per call of every path and their overhead over the bare await."""
    results: dict[str, Any] = {}
    for key, (label, path) in paths().items():
        results[key] = {"label": label, **await time_path(path)}
        print(f"  {label:48} {results[key]['ns_per_call']:8.0f} ns/call", flush=True)
    base = results["direct"]["ns_per_call"]
    for entry in results.values():
        entry["overhead_ns"] = round(entry["ns_per_call"] - base, 1)
    return results
