"""Bulkhead: a cap on concurrent calls to one upstream, with a bounded wait for a slot."""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from mercato_shared.resilience.errors import BulkheadFullError


class Bulkhead:
    """At most ``max_concurrent`` calls at once; others wait up to ``max_wait_seconds``.

    Waiters are served first come, first served: a freed slot is handed straight to the
    oldest waiter, so a newcomer cannot overtake it. Written on futures rather than
    ``asyncio.Semaphore`` with ``wait_for`` because on Python 3.11 ``wait_for`` can time out
    after the semaphore was acquired, losing the slot; here a waiter that times out or is
    cancelled after being handed a slot passes it on.
    """

    def __init__(self, name: str, max_concurrent: int, max_wait_seconds: float = 0.0) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if max_wait_seconds < 0:
            raise ValueError("max_wait_seconds must not be negative")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait_seconds = max_wait_seconds
        self._in_use = 0
        self._rejected = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def rejected(self) -> int:
        """Calls turned away since the bulkhead was made."""
        return self._rejected

    async def acquire(self) -> None:
        """Take a slot, waiting up to ``max_wait_seconds``; raise BulkheadFullError if none."""
        # While anyone waits every slot is taken (release hands slots over), so this check
        # alone keeps newcomers behind the queue.
        if self._in_use < self.max_concurrent:
            self._in_use += 1
            return
        if self.max_wait_seconds == 0:
            self._rejected += 1
            raise BulkheadFullError(self.name, self.max_concurrent)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a slot just as the wait ended: it is ours, so pass it on.
                self.release()
            elif waiter in self._waiters:  # release may already have dropped it
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                self._rejected += 1
                raise BulkheadFullError(self.name, self.max_concurrent) from None
            raise

    def release(self) -> None:
        """Give a slot back, to the oldest waiter if there is one."""
        if self._in_use == 0:
            raise RuntimeError(f"bulkhead {self.name!r} released more often than acquired")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_use -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
