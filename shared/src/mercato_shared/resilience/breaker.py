"""Circuit breaker after Resilience4j: failure and slow-call rates over a count-based window.

CLOSED records the outcome of the last ``window_size`` calls and opens once the window holds
``minimum_calls`` and its failure or slow-call rate reaches a threshold. OPEN rejects every
call until ``open_duration`` has passed; the move to HALF_OPEN happens lazily, on the next
``acquire`` or read of ``state``. HALF_OPEN admits ``half_open_probes`` calls in total and
rejects the rest; as in Resilience4j, a failing probe does not reopen the breaker at once:
when every probe has been recorded, their rates decide between CLOSED (with an empty window)
and OPEN again. An ignored probe hands its place to another caller.

Every state change is synchronous and nothing is held across an await, so a breaker is safe
to share between the tasks of one event loop. Each transition starts a new generation: an
outcome from a call admitted before it (a slow straggler finishing after the breaker opened,
say) is dropped rather than counted against the new state.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NoReturn, ParamSpec, TypeVar

from mercato_shared.resilience.errors import BreakerOpenError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Callers turned away in HALF_OPEN wait for probes already in flight, which settle within
# about a request's time; a second is also the finest grain of HTTP's Retry-After.
HALF_OPEN_RETRY_AFTER = 1.0


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


TransitionListener = Callable[[str, BreakerState, BreakerState], None]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds of a circuit breaker; rates in percent, durations in seconds."""

    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 50.0
    slow_call_rate_threshold: float = 100.0
    slow_call_duration: float = 2.0
    open_duration: float = 10.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError("window_size must be at least 1")
        if not 1 <= self.minimum_calls <= self.window_size:
            raise ValueError("minimum_calls must be between 1 and window_size")
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0 < getattr(self, field) <= 100:
                raise ValueError(f"{field} must be in (0, 100]")
        if self.slow_call_duration <= 0 or self.open_duration <= 0:
            raise ValueError("slow_call_duration and open_duration must be positive")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be at least 1")


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """A snapshot for health pages; rates are None until the window can decide."""

    name: str
    state: BreakerState
    failure_rate: float | None
    slow_call_rate: float | None
    buffered_calls: int
    failed_calls: int
    slow_calls: int
    rejected_calls: int


class _Window:
    """Outcomes of the last ``size`` calls with running totals; decides from ``needed`` on."""

    def __init__(self, size: int, needed: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.needed = needed
        self.failed = 0
        self.slow = 0

    def __len__(self) -> int:
        return len(self._outcomes)

    def add(self, *, failed: bool, slow: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            old_failed, old_slow = self._outcomes[0]
            self.failed -= old_failed
            self.slow -= old_slow
        self._outcomes.append((failed, slow))
        self.failed += failed
        self.slow += slow

    def rates(self) -> tuple[float, float] | None:
        if len(self) < self.needed:
            return None
        return 100.0 * self.failed / len(self), 100.0 * self.slow / len(self)


class Permit:
    """Leave to make one call; record its outcome once (later records are no-ops)."""

    __slots__ = ("_breaker", "_generation", "_settled", "_started")

    def __init__(self, breaker: CircuitBreaker, generation: int, started: float) -> None:
        self._breaker = breaker
        self._generation = generation
        self._started = started
        self._settled = False

    @property
    def settled(self) -> bool:
        """Whether an outcome (or ignore) has been recorded."""
        return self._settled

    def success(self) -> None:
        """Record a success; it still counts as slow if it took too long."""
        self._record(failed=False)

    def failure(self) -> None:
        """Record a failure."""
        self._record(failed=True)

    def ignore(self) -> None:
        """Give the permit back without an outcome (e.g. the client went away)."""
        if not self._settled:
            self._settled = True
            self._breaker._release(self._generation)

    def _record(self, *, failed: bool) -> None:
        # First outcome wins, so `finally: permit.ignore()` is a safe net after recording.
        if not self._settled:
            self._settled = True
            duration = self._breaker._clock() - self._started
            self._breaker._record(self._generation, failed=failed, duration=duration)


def _every_exception(exc: Exception) -> bool:
    return True


class CircuitBreaker:
    """A Resilience4j-style breaker for one upstream, shared by the tasks of one event loop."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        is_failure: Callable[[Exception], bool] = _every_exception,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._is_failure = is_failure
        self._clock = clock
        self._listeners: list[TransitionListener] = []
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window = _Window(self.config.window_size, self.config.minimum_calls)
        self._opened_at = 0.0
        self._probes_admitted = 0
        self._rejected = 0

    @property
    def state(self) -> BreakerState:
        """The current state, after moving OPEN to HALF_OPEN if its time is up."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.config.open_duration
        ):
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def on_transition(self, listener: TransitionListener) -> None:
        """Call ``listener(name, from_state, to_state)`` after every state change."""
        self._listeners.append(listener)

    def acquire(self) -> Permit:
        """Admit one call or raise BreakerOpenError; the caller must settle the permit."""
        state = self.state
        if state is BreakerState.OPEN:
            remaining = self._opened_at + self.config.open_duration - self._clock()
            self._reject(remaining)
        if state is BreakerState.HALF_OPEN:
            if self._probes_admitted >= self.config.half_open_probes:
                self._reject(HALF_OPEN_RETRY_AFTER)
            self._probes_admitted += 1
        return Permit(self, self._generation, self._clock())

    async def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn`` under the breaker; exceptions count as failures if ``is_failure``."""
        permit = self.acquire()
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            # An exception that is not a failure (a 404, say) shows the upstream answering.
            if self._is_failure(exc):
                permit.failure()
            else:
                permit.success()
            raise
        else:
            permit.success()
        finally:
            # Cancellation says nothing about the upstream: give the permit back.
            permit.ignore()
        return result

    def metrics(self) -> BreakerMetrics:
        """A snapshot of the state and the window behind it."""
        state = self.state
        rates = self._window.rates()
        return BreakerMetrics(
            name=self.name,
            state=state,
            failure_rate=None if rates is None else rates[0],
            slow_call_rate=None if rates is None else rates[1],
            buffered_calls=len(self._window),
            failed_calls=self._window.failed,
            slow_calls=self._window.slow,
            rejected_calls=self._rejected,
        )

    def _reject(self, retry_after: float) -> NoReturn:
        self._rejected += 1
        raise BreakerOpenError(self.name, max(retry_after, 0.0))

    def _record(self, generation: int, *, failed: bool, duration: float) -> None:
        if generation != self._generation:
            return
        self._window.add(failed=failed, slow=duration > self.config.slow_call_duration)
        rates = self._window.rates()
        if rates is None:
            return
        failure_rate, slow_rate = rates
        tripped = (
            failure_rate >= self.config.failure_rate_threshold
            or slow_rate >= self.config.slow_call_rate_threshold
        )
        if tripped:
            self._transition(BreakerState.OPEN)
        elif self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.CLOSED)

    def _release(self, generation: int) -> None:
        if generation == self._generation and self._state is BreakerState.HALF_OPEN:
            self._probes_admitted -= 1

    def _transition(self, to: BreakerState) -> None:
        from_state, self._state = self._state, to
        self._generation += 1
        if to is BreakerState.OPEN:
            self._opened_at = self._clock()
        elif to is BreakerState.HALF_OPEN:
            probes = self.config.half_open_probes
            self._window = _Window(probes, probes)
            self._probes_admitted = 0
        else:
            self._window = _Window(self.config.window_size, self.config.minimum_calls)
        for listener in list(self._listeners):
            try:
                listener(self.name, from_state, to)
            except Exception:
                # A broken metrics hook must not break the calls the breaker guards.
                log.exception("circuit breaker %r: transition listener failed", self.name)
