"""An issuer's JSON Web Key Set, fetched without blocking and cached.

PyJWT's own PyJWKClient fetches with blocking urllib, which would stall every request on the
event loop during a refetch; this cache fetches with the gateway's aiohttp session instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

log = logging.getLogger(__name__)

FETCH_TIMEOUT_SECONDS = 3.0


class KeySetUnavailableError(Exception):
    """The key set could not be fetched and nothing usable is cached."""


class JwksCache:
    """Keys by ``kid``; refetched after ``cache_seconds``, or once for an unknown ``kid``."""

    def __init__(
        self,
        url: str,
        session: Callable[[], aiohttp.ClientSession],
        *,
        cache_seconds: float,
        min_refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._session = session
        self._cache_seconds = cache_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched_at = float("-inf")
        self._inflight: asyncio.Task[dict[str | None, jwt.PyJWK]] | None = None
        self.fetches = 0
        # Counts the key sets fetched: what was verified under an older one is verified again.
        self.generation = 0

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key named ``kid``, or None when the issuer has no such key."""
        now = self._clock()
        if self._keys is None or now - self._fetched_at >= self._cache_seconds:
            await self._refresh()
        elif kid not in self._keys and now - self._fetched_at >= self._min_refetch:
            # Keys rotate: an unknown kid earns one refetch, but at most one per interval,
            # or a stream of forged kids would turn the gateway against the issuer.
            await self._refresh()
        assert self._keys is not None  # noqa: S101 - _refresh sets it or raises
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        # Concurrent requests share one fetch instead of stampeding the issuer.
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch())
        task = self._inflight
        try:
            keys = await asyncio.shield(task)
        except Exception as exc:
            self._fetched_at = self._clock()  # failed fetches are rate-limited too
            if self._keys is None:
                raise KeySetUnavailableError(f"cannot fetch {self._url}: {exc}") from exc
            log.warning("JWKS refetch from %s failed; keeping cached keys: %s", self._url, exc)
            return
        finally:
            if self._inflight is task and task.done():
                self._inflight = None
        self._keys = keys
        self._fetched_at = self._clock()
        self.generation += 1

    async def _fetch(self) -> dict[str | None, jwt.PyJWK]:
        self.fetches += 1
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
        async with self._session().get(self._url, timeout=timeout) as response:
            response.raise_for_status()
            document: dict[str, Any] = await response.json(content_type=None)
        keys: dict[str | None, jwt.PyJWK] = {}
        for data in document.get("keys", []):
            if data.get("use", "sig") != "sig":
                continue
            try:
                keys[data.get("kid")] = jwt.PyJWK(data)
            except jwt.PyJWTError as exc:
                log.warning("ignoring unusable key %s from %s: %s", data.get("kid"), self._url, exc)
        return keys
