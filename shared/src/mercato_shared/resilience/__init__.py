"""Guards for calls to other processes: circuit breaker, retries with a budget, bulkhead."""

from mercato_shared.resilience.breaker import (
    HALF_OPEN_RETRY_AFTER,
    BreakerConfig,
    BreakerMetrics,
    BreakerState,
    CircuitBreaker,
    Permit,
    TransitionListener,
)
from mercato_shared.resilience.bulkhead import Bulkhead
from mercato_shared.resilience.errors import BreakerOpenError, BulkheadFullError, ResilienceError
from mercato_shared.resilience.retry import (
    RetryBudget,
    RetryPolicy,
    backoff_delay,
    retry,
)

__all__ = [
    "HALF_OPEN_RETRY_AFTER",
    "BreakerConfig",
    "BreakerMetrics",
    "BreakerOpenError",
    "BreakerState",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "Permit",
    "ResilienceError",
    "RetryBudget",
    "RetryPolicy",
    "TransitionListener",
    "backoff_delay",
    "retry",
]
