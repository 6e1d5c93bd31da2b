"""The keys of X-Mercato-Identity: the gateway's signing key and the services' set of public keys.

Every token names its key in the JWT header (`kid`, the key's RFC 7638 thumbprint, so no
configuration has to agree on names). Services accept any key of their set, a PEM file or a
directory of them, and the gateway signs with the one key it holds. Both re-read their files
when they change, which is what lets a key be rotated without a restart or an outage:

1. add the new public key to every service's set, and wait until they have read it;
2. give the gateway the new private key: its next tokens name the new key;
3. once the gateway's log says it signs with the new key, and a token lifetime has passed,
   remove the old public key from the sets.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import ECAlgorithm

log = logging.getLogger(__name__)

# How often a key file's metadata is looked at (one stat per file, not a read).
RELOAD_CHECK_SECONDS = 2.0
PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"


def key_id(key: EllipticCurvePublicKey) -> str:
    """The key's JWK thumbprint (RFC 7638): the same for the same key, wherever computed."""
    jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key parsed once, with the id its tokens carry."""

    key: EllipticCurvePrivateKey
    kid: str

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, EllipticCurvePrivateKey):
            raise ValueError("the identity signing key must be an EC (P-256) key")
        return cls(key=key, kid=key_id(key.public_key()))


class _Watched:
    """A file or directory, and whether it changed since last read (checked at intervals)."""

    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        self.path = path
        self._clock = clock
        self._checked_at = clock()
        self._seen = self._fingerprint()

    def _fingerprint(self) -> tuple[tuple[str, int, int, int], ...]:
        found = []
        for file in _key_files(self.path):
            try:
                stat = file.stat()
            except OSError:
                continue  # removed between the listing and the stat: the next check sees it
            # The inode too: a file replaced by a rename (or a Kubernetes secret's symlink
            # swap) may keep the size and, within the clock's resolution, the time.
            found.append((file.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def changed(self) -> bool:
        now = self._clock()
        if now - self._checked_at < RELOAD_CHECK_SECONDS:
            return False
        self._checked_at = now
        seen = self._fingerprint()
        if seen == self._seen:
            return False
        self._seen = seen
        return True


def _key_files(path: Path) -> list[Path]:
    """The file itself, or a directory's ``*.pem`` files (a secret volume's links included)."""
    return sorted(path.glob("*.pem")) if path.is_dir() else [path]


def _public_keys(path: Path) -> dict[str, EllipticCurvePublicKey]:
    keys: dict[str, EllipticCurvePublicKey] = {}
    for file in _key_files(path):
        data = file.read_bytes()
        # One file may hold several keys, one PEM block each.
        for block in data.split(PEM_BEGIN)[1:]:
            key = load_pem_public_key(PEM_BEGIN + block)
            if not isinstance(key, EllipticCurvePublicKey):
                raise ValueError(f"{file}: identity keys must be EC (P-256) keys")
            keys[key_id(key)] = key
    if not keys:
        raise ValueError(f"no identity public key in {path}")
    return keys


class PublicKeySet:
    """The public keys a service accepts identity tokens from, by key id."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = _public_keys(path)
        self._watched = _Watched(path, clock=clock)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def get(self, kid: str | None) -> EllipticCurvePublicKey | None:
        """The key named ``kid``; a token without one (from before ids) needs a single key."""
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def refresh(self) -> bool:
        """Re-read the keys if their files changed; True when the set is different now."""
        if not self._watched.changed():
            return False
        try:
            keys = _public_keys(self._watched.path)
        except (OSError, ValueError) as exc:
            # A half-written or emptied set must not lock every caller out: keep the last.
            path = self._watched.path
            log.error("identity keys in %s unreadable, keeping the last ones: %s", path, exc)
            return False
        if keys.keys() == self._keys.keys():
            return False
        log.info("identity keys now %s", sorted(keys))
        self._keys = keys
        return True


class SigningKeyFile:
    """The gateway's signing key, read again when its file changes."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.current = SigningKey.from_pem(path.read_bytes())
        self._watched = _Watched(path, clock=clock)
        log.info("identity tokens signed with key %s", self.current.kid)

    def refresh(self) -> bool:
        """Re-read the key if its file changed; True when it is another key now."""
        if not self._watched.changed():
            return False
        try:
            key = SigningKey.from_pem(self._watched.path.read_bytes())
        except (OSError, ValueError) as exc:
            log.error("identity signing key unreadable, keeping %s: %s", self.current.kid, exc)
            return False
        if key.kid == self.current.kid:
            return False
        self.current = key
        log.info("identity tokens signed with key %s", key.kid)
        return True
