"""A clock the tests move by hand, so no test waits for real time to pass."""

import pytest

from tests.infra import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
