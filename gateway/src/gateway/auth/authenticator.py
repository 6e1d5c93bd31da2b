"""Bearer token verification against the configured issuers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import jwt

from gateway.auth.jwks import JwksCache, KeySetUnavailableError
from gateway.settings import IssuerConfig
from mercato_shared.identity import Identity, Role

REQUIRED_CLAIMS = ["sub", "exp", "iss", "aud"]
# Verified tokens kept at most, when an issuer enables the cache; the oldest go first.
VERIFIED_CACHE_ENTRIES = 10_000


class AuthenticationError(Exception):
    """The token is missing, malformed, forged, expired or not for us: 401."""


class KeysUnavailableError(Exception):
    """The issuer's keys cannot be fetched right now: 503, the token may well be valid."""


class _Issuer:
    def __init__(self, config: IssuerConfig, session: Callable[[], aiohttp.ClientSession]) -> None:
        self.config = config
        self.secret: bytes | None = None
        if config.hs256_secret is not None:
            self.secret = config.hs256_secret.get_secret_value().encode()
        elif config.hs256_secret_file is not None:
            self.secret = config.hs256_secret_file.read_bytes().strip()
        self.jwks = (
            JwksCache(
                str(config.jwks_url),
                session,
                cache_seconds=config.jwks_cache_seconds,
                min_refetch_seconds=config.jwks_min_refetch_seconds,
            )
            if config.jwks_url is not None
            else None
        )

    async def key_for(self, algorithm: str, kid: str | None) -> Any:
        if algorithm == "HS256":
            return self.secret
        assert self.jwks is not None  # noqa: S101 - IssuerConfig guarantees it
        try:
            jwk = await self.jwks.get(kid)
        except KeySetUnavailableError as exc:
            raise KeysUnavailableError(str(exc)) from exc
        if jwk is None:
            raise AuthenticationError("unknown key id")
        # The key decides the algorithm, not the token: an RSA key never verifies an HS256
        # token (the classic confusion), nor an ES256 key an RS256 one.
        if jwk.algorithm_name != algorithm:
            raise AuthenticationError("token algorithm does not match its key")
        return jwk.key


class Authenticator:
    """Maps a bearer token to an Identity, or raises AuthenticationError."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        session: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = {config.issuer: _Issuer(config, session) for config in issuers}
        self._clock = clock
        # token -> (identity, reusable until): filled only for issuers that enable it.
        self._verified: dict[str, tuple[Identity, float]] = {}

    async def authenticate(self, token: str) -> Identity:
        """Verify signature, algorithm, issuer, audience and times; return who is calling."""
        cached = self._verified.get(token)
        if cached is not None:
            if self._clock() < cached[1]:
                return cached[0]
            del self._verified[token]
        identity, issuer, expires = await self._verify(token)
        ttl = issuer.config.verified_cache_seconds
        if ttl > 0:
            # Safe to reuse: a result depends only on the token's bytes, the issuer's keys
            # and the time. The time-dependent checks end at exp, which bounds the entry
            # (nbf has passed already); keys are cached for jwks_cache_seconds anyway, which
            # the setting may not exceed, so a withdrawn key is not honoured any longer than
            # it would be without this cache.
            if len(self._verified) >= VERIFIED_CACHE_ENTRIES:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (identity, min(expires, self._clock() + ttl))
        return identity

    async def _verify(self, token: str) -> tuple[Identity, _Issuer, float]:
        try:
            # One parse yields both the header and the claims that pick the issuer and key.
            parts = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthenticationError("malformed token") from exc
        header, unverified = parts["header"], parts["payload"]
        issuer = self._issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise AuthenticationError("unknown issuer")
        algorithm = str(header.get("alg"))
        if algorithm not in issuer.config.algorithms:
            raise AuthenticationError(f"algorithm {algorithm} not accepted for this issuer")
        kid = header.get("kid")
        key = await issuer.key_for(algorithm, kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=issuer.config.audiences,
                issuer=issuer.config.issuer,
                leeway=issuer.config.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError(str(exc)) from exc
        identity = Identity(
            subject=str(claims["sub"]), roles=_roles(claims.get(issuer.config.roles_claim))
        )
        return identity, issuer, float(claims["exp"])


def _roles(value: object) -> frozenset[Role]:
    """Known roles from a list or a space-separated string; unknown ones grant nothing."""
    names = value.split() if isinstance(value, str) else value
    if not isinstance(names, list):
        return frozenset()
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in names if isinstance(name, str) and name in known)
