"""The bulkhead under real concurrency; tests wait on conditions, never on sleeps."""

import asyncio

import pytest

from mercato_shared.resilience import Bulkhead, BulkheadFullError, ResilienceError
from tests.infra import eventually


async def _until(condition) -> None:
    async def probe():
        return condition()

    await eventually(probe, within=5.0, interval=0.001)


async def test_at_most_max_concurrent_calls_run_at_once():
    bulkhead = Bulkhead("upstream", max_concurrent=3, max_wait_seconds=30.0)
    gate = asyncio.Event()
    active = peak = finished = 0

    async def call():
        nonlocal active, peak, finished
        async with bulkhead:
            active += 1
            peak = max(peak, active)
            await gate.wait()
            await asyncio.sleep(0)  # a yield: a slot handed out too early would overlap here
            active -= 1
        finished += 1

    tasks = [asyncio.create_task(call()) for _ in range(9)]
    await _until(lambda: bulkhead.in_use == 3 and bulkhead.waiting == 6)
    assert peak == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert (peak, finished, bulkhead.in_use, bulkhead.waiting) == (3, 9, 0, 0)
    assert bulkhead.rejected == 0


async def test_full_bulkhead_without_wait_rejects_at_once():
    bulkhead = Bulkhead("upstream", max_concurrent=1)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFullError) as caught:
        await bulkhead.acquire()
    assert isinstance(caught.value, ResilienceError)
    assert (bulkhead.in_use, bulkhead.rejected) == (1, 1)
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_waiter_times_out_with_bulkhead_full_error():
    bulkhead = Bulkhead("upstream", max_concurrent=1, max_wait_seconds=0.05)
    await bulkhead.acquire()
    with pytest.raises(BulkheadFullError, match="upstream"):
        await bulkhead.acquire()
    assert (bulkhead.in_use, bulkhead.waiting, bulkhead.rejected) == (1, 0, 1)
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_cancelled_waiter_frees_nothing_it_did_not_take():
    bulkhead = Bulkhead("upstream", max_concurrent=1, max_wait_seconds=30.0)
    await bulkhead.acquire()
    waiter = asyncio.create_task(bulkhead.acquire())
    await _until(lambda: bulkhead.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (bulkhead.in_use, bulkhead.waiting) == (1, 0)
    bulkhead.release()
    assert bulkhead.in_use == 0
    await bulkhead.acquire()  # the slot is really free
    assert bulkhead.in_use == 1
    bulkhead.release()


async def test_waiter_cancelled_after_being_handed_a_slot_passes_it_on():
    bulkhead = Bulkhead("upstream", max_concurrent=1, max_wait_seconds=30.0)
    await bulkhead.acquire()
    first = asyncio.create_task(bulkhead.acquire())
    await _until(lambda: bulkhead.waiting == 1)
    second = asyncio.create_task(bulkhead.acquire())
    await _until(lambda: bulkhead.waiting == 2)
    bulkhead.release()  # hands the slot to the first waiter...
    first.cancel()  # ...which is cancelled before it can run
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert (bulkhead.in_use, bulkhead.waiting) == (1, 0)
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_slot_is_released_when_the_call_fails():
    bulkhead = Bulkhead("upstream", max_concurrent=2)
    with pytest.raises(ConnectionError):
        async with bulkhead:
            raise ConnectionError("refused")
    assert bulkhead.in_use == 0


def test_release_without_acquire_is_an_error():
    with pytest.raises(RuntimeError, match="released more often"):
        Bulkhead("upstream", max_concurrent=1).release()


@pytest.mark.parametrize(
    "bad", [{"max_concurrent": 0}, {"max_concurrent": 1, "max_wait_seconds": -1}]
)
def test_bulkhead_rejects_values_out_of_range(bad):
    with pytest.raises(ValueError, match="must"):
        Bulkhead("upstream", **bad)
