"""Errors raised when a resilience guard turns a call away before it starts."""

from __future__ import annotations


class ResilienceError(Exception):
    """Base of the errors raised by breakers and bulkheads."""


class BreakerOpenError(ResilienceError):
    """The circuit breaker refused the call; ``retry_after`` is a hint in seconds."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry after {retry_after:.2f}s")
        self.name = name
        self.retry_after = retry_after


class BulkheadFullError(ResilienceError):
    """The bulkhead had no free slot within its maximum wait."""

    def __init__(self, name: str, max_concurrent: int) -> None:
        super().__init__(f"bulkhead {name!r} is full ({max_concurrent} calls in flight)")
        self.name = name
        self.max_concurrent = max_concurrent
