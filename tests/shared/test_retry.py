import pytest

from mercato_shared.retry import backoff_delay


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.1), (2, 0.2), (4, 0.8), (20, 5.0)])
def test_backoff_is_jittered_within_half_to_full_exponential_ceiling(attempt, ceiling):
    delays = [backoff_delay(attempt, base=0.1, cap=5.0) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 100  # jittered, not constant
