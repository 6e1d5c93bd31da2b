"""Bearer token verification against the configured issuers."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from gateway.auth.jwks import JwksCache, KeySetUnavailableError
from gateway.settings import IssuerConfig
from mercato_shared.identity import Identity, Role, valid_subject

REQUIRED_CLAIMS = ["sub", "exp", "iss", "aud"]
# Verified tokens kept at most; the least recently used go first.
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

    @property
    def key_generation(self) -> int:
        """Changes whenever the issuer's keys are fetched again (constant for a shared secret)."""
        return 0 if self.jwks is None else self.jwks.generation

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


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token's verification, reusable while its bounds hold."""

    identity: Identity
    issuer: _Issuer
    not_before: float  # nbf less the leeway, or -inf
    until: float  # the earlier of exp and the cache's maximum age
    generation: int  # of the issuer's keys it was verified with


class Authenticator:
    """Maps a bearer token to an Identity, or raises AuthenticationError.

    A verified token's identity is reused for up to its issuer's ``verified_cache_seconds``
    (an LRU of the whole token, ``VERIFIED_CACHE_ENTRIES`` at most): a result depends only on
    the token's bytes, the issuer's keys and the time. Every hit checks the times again, and
    an entry verified with keys since fetched again is verified again, so a key withdrawn
    from the JWKS stops being honoured at the next fetch, as without the cache.
    """

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        session: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = {config.issuer: _Issuer(config, session) for config in issuers}
        self._clock = clock
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def authenticate(self, token: str) -> Identity:
        """Verify signature, algorithm, issuer, audience and times; return who is calling."""
        cached = self._verified.get(token)
        if cached is not None:
            now = self._clock()
            if (
                cached.not_before <= now < cached.until
                and cached.generation == cached.issuer.key_generation
            ):
                self._verified.move_to_end(token)
                return cached.identity
            del self._verified[token]
        # Taken before verifying: keys fetched again meanwhile make the entry stale at once,
        # whichever keys the verification saw.
        generations = {name: issuer.key_generation for name, issuer in self._issuers.items()}
        identity, issuer, claims = await self._verify(token)
        ttl = issuer.config.verified_cache_seconds
        if ttl > 0:
            nbf = claims.get("nbf")
            self._verified[token] = _Verified(
                identity=identity,
                issuer=issuer,
                not_before=(
                    float(nbf) - issuer.config.leeway_seconds
                    if isinstance(nbf, int | float)
                    else -math.inf
                ),
                until=min(float(claims["exp"]), self._clock() + ttl),
                generation=generations[issuer.config.issuer],
            )
            if len(self._verified) > VERIFIED_CACHE_ENTRIES:
                self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, _Issuer, dict[str, Any]]:
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
        if not valid_subject(claims["sub"]):
            raise AuthenticationError("sub must be 1 to 255 characters, none a control character")
        identity = Identity(
            subject=claims["sub"], roles=_roles(claims.get(issuer.config.roles_claim))
        )
        return identity, issuer, claims


def _roles(value: object) -> frozenset[Role]:
    """Known roles from a list or a space-separated string; unknown ones grant nothing."""
    names = value.split() if isinstance(value, str) else value
    if not isinstance(names, list):
        return frozenset()
    known = {role.value for role in Role}
    return frozenset(Role(name) for name in names if isinstance(name, str) and name in known)
