"""The circuit breaker's state machine, driven by a fake clock."""

import asyncio

import pytest

from mercato_shared.resilience import (
    HALF_OPEN_RETRY_AFTER,
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    ResilienceError,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SMALL = BreakerConfig(window_size=10, minimum_calls=5, open_duration=10.0, half_open_probes=3)


def _make(clock, config=SMALL, **kwargs):
    return CircuitBreaker("upstream", config, clock=clock, **kwargs)


def _run(breaker, clock, outcomes: str, *, seconds: float = 0.01) -> None:
    """One call per letter: s succeeds, f fails, each taking ``seconds``."""
    for outcome in outcomes:
        permit = breaker.acquire()
        clock.advance(seconds)
        permit.success() if outcome == "s" else permit.failure()


def _open(breaker, clock) -> None:
    _run(breaker, clock, "f" * breaker.config.minimum_calls)
    assert breaker.state is OPEN


def _half_open(breaker, clock) -> None:
    _open(breaker, clock)
    clock.advance(breaker.config.open_duration)
    assert breaker.state is HALF_OPEN


def test_failure_rate_opens_only_once_minimum_calls_are_buffered(clock):
    breaker = _make(clock)
    _run(breaker, clock, "ffff")
    assert breaker.state is CLOSED
    assert breaker.metrics().failure_rate is None  # too few calls to judge
    _run(breaker, clock, "f")
    assert breaker.state is OPEN
    assert breaker.metrics().failure_rate == 100.0


def test_failure_rate_below_threshold_keeps_it_closed(clock):
    breaker = _make(clock)
    _run(breaker, clock, "ssfsfssfs")  # 3 of 9: 33%
    assert breaker.state is CLOSED
    _run(breaker, clock, "f")  # 4 of 10: 40%
    assert breaker.state is CLOSED
    _run(breaker, clock, "f")  # oldest success leaves the window: 5 of 10
    assert breaker.state is OPEN


def test_slow_calls_open_the_breaker_even_when_they_succeed(clock):
    config = BreakerConfig(
        window_size=10, minimum_calls=4, slow_call_rate_threshold=50.0, slow_call_duration=1.0
    )
    breaker = _make(clock, config)
    _run(breaker, clock, "ss", seconds=1.0)  # exactly the threshold is not slow
    _run(breaker, clock, "s", seconds=1.5)
    assert breaker.state is CLOSED
    _run(breaker, clock, "s", seconds=1.5)
    assert breaker.state is OPEN
    metrics = breaker.metrics()
    assert (metrics.failure_rate, metrics.slow_call_rate) == (0.0, 50.0)


def test_open_rejects_fast_with_the_remaining_open_time(clock):
    breaker = _make(clock)
    _open(breaker, clock)
    clock.advance(4.0)
    with pytest.raises(BreakerOpenError) as caught:
        breaker.acquire()
    assert isinstance(caught.value, ResilienceError)
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.name == "upstream"
    assert breaker.metrics().rejected_calls == 1


def test_half_open_once_open_duration_has_passed(clock):
    breaker = _make(clock)
    _open(breaker, clock)
    clock.advance(9.99)
    assert breaker.state is OPEN
    clock.advance(0.01)
    assert breaker.state is HALF_OPEN


def test_half_open_admits_exactly_the_permitted_probes(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    probes = [breaker.acquire() for _ in range(3)]
    with pytest.raises(BreakerOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == HALF_OPEN_RETRY_AFTER
    assert len(probes) == 3


def test_succeeding_probes_close_it_with_an_empty_window(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    _run(breaker, clock, "ss")
    assert breaker.state is HALF_OPEN  # decided only once every probe is in
    _run(breaker, clock, "s")
    assert breaker.state is CLOSED
    assert breaker.metrics().buffered_calls == 0
    _run(breaker, clock, "ffff")  # the minimum applies afresh
    assert breaker.state is CLOSED


def test_one_failing_probe_of_three_does_not_reopen_below_the_threshold(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    _run(breaker, clock, "f")
    assert breaker.state is HALF_OPEN  # no immediate reopen, as in Resilience4j
    _run(breaker, clock, "ss")
    assert breaker.state is CLOSED


def test_failing_probe_set_reopens_for_another_open_duration(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    _run(breaker, clock, "sff")
    assert breaker.state is OPEN
    with pytest.raises(BreakerOpenError) as caught:
        breaker.acquire()
    assert caught.value.retry_after == pytest.approx(10.0)


def test_ignored_probe_hands_its_place_to_another_caller(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    probes = [breaker.acquire() for _ in range(3)]
    probes[0].ignore()
    extra = breaker.acquire()
    for permit in [*probes[1:], extra]:
        permit.success()
    assert breaker.state is CLOSED


def test_listeners_see_every_transition_in_order(clock):
    breaker = _make(clock)
    seen = []
    breaker.on_transition(lambda name, old, new: seen.append((name, old, new)))
    _half_open(breaker, clock)
    _run(breaker, clock, "fff")
    clock.advance(10.0)
    _run(breaker, clock, "sss")
    assert seen == [
        ("upstream", CLOSED, OPEN),
        ("upstream", OPEN, HALF_OPEN),
        ("upstream", HALF_OPEN, OPEN),
        ("upstream", OPEN, HALF_OPEN),
        ("upstream", HALF_OPEN, CLOSED),
    ]


def test_a_failing_listener_neither_blocks_the_transition_nor_later_listeners(clock, caplog):
    breaker = _make(clock)
    seen = []

    def broken(name, old, new):
        raise RuntimeError("metrics backend down")

    breaker.on_transition(broken)
    breaker.on_transition(lambda name, old, new: seen.append(new))
    _open(breaker, clock)
    assert seen == [OPEN]
    assert "transition listener failed" in caplog.text


def test_sliding_window_forgets_the_oldest_outcomes(clock):
    breaker = _make(clock, BreakerConfig(window_size=10, minimum_calls=10))
    _run(breaker, clock, "ffffssssss")
    assert breaker.metrics().failed_calls == 4
    _run(breaker, clock, "ssss")
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (10, 0)
    _run(breaker, clock, "ffff")  # 4 of 10; had the first four stayed, 8
    assert breaker.state is CLOSED


def test_outcome_from_before_a_transition_is_dropped(clock):
    breaker = _make(clock)
    straggler = breaker.acquire()
    _half_open(breaker, clock)
    straggler.failure()  # admitted while CLOSED: it is no probe
    assert breaker.metrics().buffered_calls == 0
    _run(breaker, clock, "sss")
    assert breaker.state is CLOSED


def test_a_permit_records_once_and_later_records_are_ignored(clock):
    breaker = _make(clock)
    permit = breaker.acquire()
    permit.success()
    permit.failure()
    permit.ignore()
    assert permit.settled
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (1, 0)


async def test_call_records_exceptions_as_failures_unless_is_failure_says_otherwise(clock):
    breaker = _make(clock, is_failure=lambda exc: not isinstance(exc, LookupError))

    async def answer(value, *, error=None):
        if error is not None:
            raise error
        return value

    assert await breaker.call(answer, 42) == 42
    with pytest.raises(KeyError):
        await breaker.call(answer, 0, error=KeyError("no such order"))
    with pytest.raises(ConnectionError):
        await breaker.call(answer, 0, error=ConnectionError("refused"))
    metrics = breaker.metrics()
    assert (metrics.buffered_calls, metrics.failed_calls) == (3, 1)


async def test_call_gives_a_cancelled_probe_back(clock):
    breaker = _make(clock)
    _half_open(breaker, clock)
    started, never = asyncio.Event(), asyncio.Event()

    async def hang():
        started.set()
        await never.wait()

    task = asyncio.create_task(breaker.call(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.metrics().buffered_calls == 0
    _run(breaker, clock, "sss")  # all three probes are still available
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    "bad",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"window_size": 5, "minimum_calls": 6},
        {"failure_rate_threshold": 0},
        {"slow_call_rate_threshold": 101},
        {"slow_call_duration": 0},
        {"open_duration": -1},
        {"half_open_probes": 0},
    ],
)
def test_config_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="must"):
        BreakerConfig(**bad)
