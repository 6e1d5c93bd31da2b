"""Backoff, the retry loop and the retry budget; sleeps and time are injected."""

import pytest

from mercato_shared.resilience import RetryBudget, RetryPolicy, backoff_delay, retry


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.1), (2, 0.2), (4, 0.8), (20, 5.0)])
def test_backoff_is_jittered_within_half_to_full_exponential_ceiling(attempt, ceiling):
    delays = [backoff_delay(attempt, base=0.1, cap=5.0) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 100  # jittered, not constant


class Flaky:
    """Fails with the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    """Records the delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def _failures(n: int) -> list[BaseException]:
    return [ConnectionError(f"attempt {i}") for i in range(1, n + 1)]


async def test_non_retryable_error_is_raised_at_once():
    fn, sleep = Flaky(ValueError("bad request")), Sleeps()
    with pytest.raises(ValueError, match="bad request"):
        await retry(fn, policy=RetryPolicy(max_attempts=5), retryable=_transient, sleep=sleep)
    assert (fn.calls, sleep.delays) == (1, [])


async def test_transient_errors_are_retried_until_success():
    fn = Flaky(*_failures(2))
    result = await retry(
        fn, policy=RetryPolicy(max_attempts=3), retryable=_transient, sleep=Sleeps()
    )
    assert (result, fn.calls) == ("ok", 3)


async def test_retries_stop_at_max_attempts_with_the_last_error():
    fn, sleep = Flaky(*_failures(10)), Sleeps()
    with pytest.raises(ConnectionError, match="attempt 4"):
        await retry(fn, policy=RetryPolicy(max_attempts=4), retryable=_transient, sleep=sleep)
    assert (fn.calls, len(sleep.delays)) == (4, 3)


async def test_delays_follow_capped_exponential_backoff():
    sleep = Sleeps()
    policy = RetryPolicy(max_attempts=6, base_delay=0.1, max_delay=0.3)
    with pytest.raises(ConnectionError):
        await retry(Flaky(*_failures(6)), policy=policy, retryable=_transient, sleep=sleep)
    ceilings = [0.1, 0.2, 0.3, 0.3, 0.3]
    assert len(sleep.delays) == len(ceilings)
    for delay, ceiling in zip(sleep.delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


async def test_an_exhausted_budget_stops_retrying(clock):
    budget = RetryBudget(ratio=0.2, min_per_second=0, clock=clock)
    for _ in range(9):
        budget.record_request()
    fn, sleep = Flaky(*_failures(10)), Sleeps()
    # retry() counts its own request: 10 requests at 20% buy two retries.
    with pytest.raises(ConnectionError, match="attempt 3"):
        await retry(
            fn,
            policy=RetryPolicy(max_attempts=10),
            budget=budget,
            retryable=_transient,
            sleep=sleep,
        )
    assert (fn.calls, len(sleep.delays), budget.available()) == (3, 2, 0)


def test_min_per_second_lets_a_quiet_path_retry(clock):
    budget = RetryBudget(window_seconds=10.0, ratio=0.2, min_per_second=1.0, clock=clock)
    assert all(budget.try_spend() for _ in range(10))
    assert not budget.try_spend()


def test_requests_buy_retries_at_the_ratio(clock):
    budget = RetryBudget(ratio=0.25, min_per_second=0, clock=clock)
    for _ in range(7):
        budget.record_request()
    assert budget.available() == 1  # 1.75 rounds down
    budget.record_request()
    assert budget.available() == 2


def test_budget_window_slides(clock):
    budget = RetryBudget(window_seconds=10.0, ratio=0.5, min_per_second=0, clock=clock)
    for _ in range(4):
        budget.record_request()
    clock.advance(5.0)
    for _ in range(4):
        budget.record_request()
    assert budget.try_spend()
    assert budget.available() == 3
    clock.advance(5.0)  # the first four requests have left the window
    assert budget.available() == 1
    clock.advance(5.0)  # and now everything has
    assert budget.available() == 0
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()


@pytest.mark.parametrize("bad", [{"window_seconds": 0}, {"ratio": -0.1}, {"min_per_second": -1}])
def test_budget_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="must"):
        RetryBudget(**bad)


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"base_delay": -1}, {"max_delay": -1}])
def test_policy_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**bad)
