"""X-Mercato-Identity: the short-lived JWT the gateway signs and every service verifies.

The gateway holds the private key (ES256); services hold only public keys, so a service
that is compromised cannot mint identities for calls to the others. Each token names its key
(`kid`); how keys are named, read and rotated is in ``mercato_shared.identity_keys``.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from mercato_shared.identity_keys import PublicKeySet, SigningKey
from mercato_shared.problems import NotFoundError, UnauthorizedError

IDENTITY_HEADER = "X-Mercato-Identity"
ALGORITHM = "ES256"
MAX_TTL_SECONDS = 60
LEEWAY_SECONDS = 5
# A caller's subject: what a database's text column and a log line can hold. A token with
# another is refused, at the gateway and in every service.
SUBJECT_PATTERN = r"^[^\x00-\x1f\x7f]{1,255}$"
_SUBJECT = re.compile(SUBJECT_PATTERN)
# Verified tokens remembered per process; the oldest is forgotten first.
VERIFIED_TOKENS = 4096


def valid_subject(subject: object) -> bool:
    """Whether ``subject`` is 1 to 255 characters with no control character."""
    return isinstance(subject, str) and _SUBJECT.fullmatch(subject) is not None


class Owned(Protocol):
    """An object that belongs to one customer (an order, a payment)."""

    @property
    def customer_id(self) -> str: ...


OwnedT = TypeVar("OwnedT", bound=Owned)


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, as the gateway established it."""

    subject: str
    roles: frozenset[Role]

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def may_read(self, owner: str) -> bool:
        """Owners read their own objects; admins read everyone's."""
        return self.is_admin or self.subject == owner

    def readable(self, found: OwnedT | None, *, missing: str) -> OwnedT:
        """``found`` if the caller may read it, else NotFoundError(``missing``).

        Another customer's object is answered as missing (404, not 403), so that a caller
        cannot even learn that it exists.
        """
        if found is None or not self.may_read(found.customer_id):
            raise NotFoundError(missing)
        return found


class IdentityVerifier:
    """Checks identity tokens against the public keys of the gateway's signing keys."""

    def __init__(self, keys: PublicKeySet, *, issuer: str) -> None:
        self._keys = keys
        self._issuer = issuer
        # The gateway reuses a caller's token for half its lifetime, so most requests bring
        # a token verified moments ago: its identity is kept until the token expires.
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    @classmethod
    def from_path(cls, path: Path, *, issuer: str) -> IdentityVerifier:
        """Keys from a PEM file, or a directory of them, re-read when they change."""
        return cls(PublicKeySet(path), issuer=issuer)

    def verify(self, token: str) -> Identity:
        """Return the caller's identity, or raise UnauthorizedError."""
        if self._keys.refresh():
            # A key may have left the set: what it verified is verified again.
            self._verified.clear()
        known = self._verified.get(token)
        if known is not None:
            identity, valid_until = known
            if time.time() <= valid_until:
                return identity
            del self._verified[token]
        identity, valid_until = self._verify(token)
        self._verified[token] = (identity, valid_until)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return identity

    def _verify(self, token: str) -> tuple[Identity, float]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"invalid identity token: {exc}") from exc
        key = self._keys.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise UnauthorizedError("identity token signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["sub", "exp", "iat", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"invalid identity token: {exc}") from exc
        # A token that lives longer than the contract allows is a stolen or forged one.
        if claims["exp"] - claims["iat"] > MAX_TTL_SECONDS:
            raise UnauthorizedError("identity token lifetime exceeds the maximum")
        try:
            roles = frozenset(Role(role) for role in claims.get("roles", []))
        except ValueError as exc:
            raise UnauthorizedError("identity token names an unknown role") from exc
        if not valid_subject(claims["sub"]):
            raise UnauthorizedError("identity token names an invalid subject")
        identity = Identity(subject=claims["sub"], roles=roles)
        # As long as PyJWT itself would accept it: exp plus the leeway.
        return identity, float(claims["exp"]) + LEEWAY_SECONDS


def issue_identity(
    key: SigningKey,
    *,
    subject: str,
    roles: frozenset[Role] | set[Role],
    issuer: str,
    ttl_seconds: int = 30,
) -> str:
    """Sign an identity token (the gateway's side of the contract)."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "roles": sorted(str(role) for role in roles),
        "iss": issuer,
        "iat": now,
        "exp": now + min(ttl_seconds, MAX_TTL_SECONDS),
    }
    return jwt.encode(claims, key.key, algorithm=ALGORITHM, headers={"kid": key.kid})


# Declared as a security scheme so that every service's OpenAPI document says which
# operations need the header; the gateway's public document replaces it with the bearer token.
identity_header = APIKeyHeader(
    name=IDENTITY_HEADER,
    scheme_name="identity",
    description="the identity token the gateway signs for each caller (ES256, at most 60 s)",
    auto_error=False,
)


async def get_identity(
    request: Request, token: Annotated[str | None, Security(identity_header)]
) -> Identity:
    """FastAPI dependency: the verified caller, or 401 for a missing or invalid header."""
    if not token:
        raise UnauthorizedError(f"missing {IDENTITY_HEADER} header")
    verifier: IdentityVerifier = request.app.state.identity_verifier
    return verifier.verify(token)


CurrentIdentity = Annotated[Identity, Depends(get_identity)]
