"""The knobs at work: declines, latency, outages and hangs, drawn from one seeded RNG."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from payment_sandbox.errors import ProcessorUnavailableError
from payment_sandbox.settings import Knobs, Operation

AMOUNT_OVER_LIMIT = "amount_over_limit"
DO_NOT_HONOR = "do_not_honor"


class Faults:
    """Decides declines and injects faults according to the current knobs."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        # A simulator's dice: reproducible with a seed, not meant to be unpredictable.
        self._rng = random.Random(knobs.seed)  # noqa: S311

    def update(self, changes: dict[str, Any]) -> Knobs:
        """Apply the given knobs, keeping the others; raises ValidationError, changing nothing."""
        knobs = Knobs.model_validate({**self.knobs.model_dump(), **changes})
        if "seed" in changes:
            self._rng.seed(knobs.seed)
        self.knobs = knobs
        return knobs

    def decline_reason(self, amount: int) -> str | None:
        """Why an authorization of ``amount`` is declined, or None to approve it."""
        if amount > self.knobs.decline_over_amount:
            return AMOUNT_OVER_LIMIT
        if self.knobs.decline_rate and self._rng.random() < self.knobs.decline_rate:
            return DO_NOT_HONOR
        return None

    async def before(self, operation: Operation) -> None:
        """Latency, then maybe an outage: 503 before anything is done."""
        knobs = self.knobs
        if operation not in knobs.fault_operations:
            return
        delay_ms: float = knobs.latency_ms
        if knobs.latency_jitter_ms:
            delay_ms += self._rng.uniform(0, knobs.latency_jitter_ms)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        if knobs.failure_rate and self._rng.random() < knobs.failure_rate:
            raise ProcessorUnavailableError(f"injected outage: {operation} not done")

    async def after(self, operation: Operation) -> None:
        """Maybe hang once the operation is done, so the caller cannot learn its outcome."""
        knobs = self.knobs
        if operation not in knobs.fault_operations:
            return
        if knobs.timeout_rate and self._rng.random() < knobs.timeout_rate:
            await asyncio.sleep(knobs.hang_seconds)
