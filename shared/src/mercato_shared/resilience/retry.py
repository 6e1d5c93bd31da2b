"""Retries with exponential backoff and jitter, bounded per call and by a shared budget."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# Jitter only spreads retries apart; it needs no cryptographic randomness.
_jitter = random.Random()  # noqa: S311

# The budget's window slides in tenths: counts are kept per slice, not per event.
_SLICES = 10


def backoff_delay(attempt: int, *, base: float, cap: float = 30.0) -> float:
    """Delay before 1-based ``attempt``: uniform in [d/2, d] with d = base * 2^(attempt-1)."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + _jitter.uniform(0, ceiling / 2)


@dataclass(slots=True)
class _Slice:
    index: int = -1
    requests: int = 0
    retries: int = 0


class RetryBudget:
    """Caps retries to a share of recent requests, as Finagle's RetryBudget does.

    Over the last ``window_seconds``, retries may number at most ``ratio`` times the requests
    plus a reserve of ``min_per_second * window_seconds``: each request deposits ``ratio`` of
    a retry, each retry withdraws one, and the reserve lets a quiet path still retry (in a
    burst, if it must). When an upstream fails, a retry multiplies the load on it; the budget
    keeps that extra load near ``ratio`` however many callers retry at once. Share one budget
    per upstream; ``record_request`` once per original request, not per attempt. The window
    slides in tenths of its length.
    """

    def __init__(
        self,
        *,
        window_seconds: float = 10.0,
        ratio: float = 0.2,
        min_per_second: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must not be negative")
        self.window_seconds = window_seconds
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._clock = clock
        self._slice_seconds = window_seconds / _SLICES
        self._slices = [_Slice() for _ in range(_SLICES)]

    def record_request(self) -> None:
        """Count one original request (a deposit of ``ratio`` retries)."""
        self._current().requests += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self.available() < 1:
            return False
        self._current().retries += 1
        return True

    def available(self) -> int:
        """How many retries the budget would allow right now."""
        newest = self._current().index
        live = [s for s in self._slices if newest - s.index < _SLICES]
        requests = sum(s.requests for s in live)
        retries = sum(s.retries for s in live)
        allowed = self.min_per_second * self.window_seconds + self.ratio * requests
        # The epsilon keeps 0.29 * 100 requests (28.999...) from allowing only 28 retries.
        return max(0, math.floor(allowed + 1e-9) - retries)

    def _current(self) -> _Slice:
        index = math.floor(self._clock() / self._slice_seconds)
        current = self._slices[index % _SLICES]
        if current.index != index:
            current.index, current.requests, current.retries = index, 0, 0
        return current


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry; ``max_attempts`` counts the first attempt."""

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must not be negative")


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    budget: RetryBudget | None = None,
    retryable: Callable[[BaseException], bool],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Await ``fn``, retrying errors ``retryable`` accepts while the policy and budget allow.

    Whether a call may be repeated at all is the caller's decision: pass only idempotent
    operations (the gateway retries only idempotent requests). The last error is re-raised
    once attempts run out, the error is not retryable, or the budget refuses a retry.
    Cancellation and other BaseExceptions are never retried.
    """
    if budget is not None:
        budget.record_request()
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt >= policy.max_attempts or not retryable(exc):
                raise
            if budget is not None and not budget.try_spend():
                raise
        await sleep(backoff_delay(attempt, base=policy.base_delay, cap=policy.max_delay))
        attempt += 1
