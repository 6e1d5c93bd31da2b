"""Identity tokens for upstream calls, signed once per caller and reused for part of their life.

Signing an ES256 token costs more than anything else a routed request does, yet a caller's
token says the same thing (subject, roles, issuer) on every request it makes. A token is
therefore reused for the first half of its lifetime, so the service that receives it always
has at least half of it left. The request id travels in `X-Request-Id` instead of
inside the token, which is what makes one token fit many requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mercato_shared.identity import Identity, Role, issue_identity
from mercato_shared.identity_keys import SigningKeyFile


class IdentitySigner:
    """Signed identity tokens by (subject, roles), re-signed once half their lifetime is gone."""

    def __init__(
        self,
        key: SigningKeyFile,
        *,
        issuer: str,
        ttl_seconds: int,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self._issuer = issuer
        self._ttl = ttl_seconds
        self._reuse_for = ttl_seconds / 2
        self._max_entries = max_entries
        self._clock = clock
        # (subject, roles) -> (token, monotonic time after which it is re-signed).
        self._tokens: dict[tuple[str, frozenset[Role]], tuple[str, float]] = {}
        self.signed = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def token_for(self, identity: Identity) -> str:
        """A token for ``identity`` with at least half of its lifetime left."""
        if self._key.refresh():
            # A new signing key: tokens of the old one are not handed out any more.
            self._tokens.clear()
        key = (identity.subject, identity.roles)
        now = self._clock()
        cached = self._tokens.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        # Reuse is timed on the monotonic clock, so a step of the wall clock cannot stretch
        # it; iat and exp inside the token come from the wall clock, as services check them.
        token = issue_identity(
            self._key.current,
            subject=identity.subject,
            roles=identity.roles,
            issuer=self._issuer,
            ttl_seconds=self._ttl,
        )
        self.signed += 1
        # Re-inserted at the end, so the dict stays ordered by the time each token expires.
        if self._tokens.pop(key, None) is None and len(self._tokens) >= self._max_entries:
            self._make_room(now)
        self._tokens[key] = (token, now + self._reuse_for)
        return token

    def _make_room(self, now: float) -> None:
        # Many distinct callers must not grow memory without bound. The oldest entries are
        # at the front: drop the ones due for re-signing, then, if still full, the oldest.
        while self._tokens:
            oldest = next(iter(self._tokens))
            if self._tokens[oldest][1] > now and len(self._tokens) < self._max_entries:
                return
            del self._tokens[oldest]
