"""Backoff for retry loops; the full resilience toolkit (breaker, budget) builds on this."""

from __future__ import annotations

import random

# Jitter only spreads retries apart; it needs no cryptographic randomness.
_jitter = random.Random()  # noqa: S311


def backoff_delay(attempt: int, *, base: float, cap: float = 30.0) -> float:
    """Delay before 1-based ``attempt``: uniform in [d/2, d] with d = base * 2^(attempt-1)."""
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + _jitter.uniform(0, ceiling / 2)
