"""Upstream instances: load balancing, passive ejection (breakers) and active health checks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import aiohttp

from gateway.settings import RouteConfig
from mercato_shared.resilience import (
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    Bulkhead,
    CircuitBreaker,
    Permit,
    RetryBudget,
)
from mercato_shared.tracing import untraced

log = logging.getLogger(__name__)


class NoInstanceError(Exception):
    """Every instance is unhealthy, ejected or out of half-open probes."""

    def __init__(self, prefix: str, retry_after: float) -> None:
        super().__init__(f"no available instance for {prefix}")
        self.retry_after = retry_after


@dataclass(eq=False)
class Instance:
    """One upstream process; its breaker ejects it passively, health checks actively."""

    url: str
    breaker: CircuitBreaker
    healthy: bool = True
    outstanding: int = 0
    served: int = 0
    _streak: int = field(default=0, repr=False)  # consecutive health results against `healthy`

    def record_health(self, ok: bool, *, unhealthy_after: int, healthy_after: int) -> None:
        """Flip health only after a streak of contrary results, so one blip moves nothing."""
        if ok == self.healthy:
            self._streak = 0
            return
        self._streak += 1
        if self._streak >= (healthy_after if ok else unhealthy_after):
            self.healthy, self._streak = ok, 0
            log.warning("upstream %s is now %s", self.url, "healthy" if ok else "unhealthy")


class Upstream:
    """The instances behind one route, with the route's balancer, bulkhead and retry budget."""

    def __init__(
        self,
        config: RouteConfig,
        *,
        retry_budget: RetryBudget,
        on_breaker_transition: Callable[[str, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.config = config
        self.prefix = config.prefix.rstrip("/") or "/"
        breaker = config.breaker
        breaker_config = BreakerConfig(
            window_size=breaker.window_size,
            minimum_calls=breaker.minimum_calls,
            failure_rate_threshold=breaker.failure_rate_threshold,
            slow_call_rate_threshold=breaker.slow_call_rate_threshold,
            slow_call_duration=breaker.slow_call_seconds,
            open_duration=breaker.open_seconds,
            half_open_probes=breaker.half_open_probes,
        )
        self.instances = [
            Instance(url=str(url).rstrip("/"), breaker=CircuitBreaker(str(url), breaker_config))
            for url in config.upstreams
        ]
        if on_breaker_transition is not None:
            for instance in self.instances:
                instance.breaker.on_transition(on_breaker_transition)
        self.bulkhead = Bulkhead(self.prefix, config.max_concurrent)
        self.retry_budget = retry_budget
        self._rotation = itertools.cycle(range(len(self.instances)))

    def matches(self, path: str) -> bool:
        # Whole path segments only: /api/v1/orders must not capture /api/v1/ordersX.
        return path == self.prefix or path.startswith(self.prefix + "/")

    def pick(self, exclude: set[Instance]) -> tuple[Instance, Permit]:
        """An instance to call and its breaker permit, skipping ``exclude`` and ejected ones."""
        retry_after = self.config.breaker.open_seconds
        for instance in self._candidates(exclude):
            try:
                permit = instance.breaker.acquire()
            except BreakerOpenError as exc:
                retry_after = min(retry_after, exc.retry_after)
                continue
            instance.served += 1
            return instance, permit
        raise NoInstanceError(self.prefix, max(retry_after, 1.0))

    def _candidates(self, exclude: set[Instance]) -> list[Instance]:
        if len(self.instances) == 1:
            # The common case of one instance needs neither rotation nor ordering.
            only = self.instances[0]
            return [only] if only.healthy and only not in exclude else []
        healthy = [i for i in self.instances if i.healthy and i not in exclude]
        if self.config.balancer == "round_robin":
            start = next(self._rotation)
            count = len(self.instances)
            ordered = [self.instances[(start + k) % count] for k in range(count)]
            return [i for i in ordered if i in healthy]
        # Least outstanding, ties to the least served: balanced under any concurrency.
        return sorted(healthy, key=lambda i: (i.outstanding, i.served))

    async def check_health(self, session: aiohttp.ClientSession) -> None:
        """One round of active health checks over every instance."""
        check = self.config.health_check
        timeout = aiohttp.ClientTimeout(total=check.timeout_seconds)

        async def probe(instance: Instance) -> None:
            try:
                with untraced():
                    async with session.get(instance.url + check.path, timeout=timeout) as resp:
                        ok = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            instance.record_health(
                ok, unhealthy_after=check.unhealthy_after, healthy_after=check.healthy_after
            )

        await asyncio.gather(*(probe(instance) for instance in self.instances))

    async def run_health_checks(self, session: aiohttp.ClientSession) -> None:
        """Check forever at the configured interval (cancel to stop)."""
        while True:
            with contextlib.suppress(Exception):
                await self.check_health(session)
            await asyncio.sleep(self.config.health_check.interval_seconds)


class UpstreamTable:
    """Routes a path to its upstream by longest prefix."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self._upstreams = sorted(upstreams, key=lambda u: len(u.prefix), reverse=True)

    def match(self, path: str) -> Upstream | None:
        return next((u for u in self._upstreams if u.matches(path)), None)

    def __iter__(self) -> Iterator[Upstream]:
        return iter(self._upstreams)
