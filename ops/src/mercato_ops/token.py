"""`mercato token`: a development bearer token that the dev gateway's default issuer accepts.

It signs with the development secret that the native stack generates; a production gateway
accepts no token from this issuer (its settings refuse the development issuer).
"""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from mercato_shared.identity import Role
from mercato_shared.settings import DEV_STATE_DIR

DEV_ISSUER = "mercato-dev"
DEV_AUDIENCE = "mercato"
DEV_SECRET_FILE = DEV_STATE_DIR / "keys" / "dev-token-secret"


def make_token(
    *,
    subject: str,
    roles: list[Role],
    ttl_seconds: int = 3600,
    secret_file: Path = DEV_SECRET_FILE,
    issuer: str = DEV_ISSUER,
    audience: str = DEV_AUDIENCE,
) -> str:
    """An HS256 token with sub, roles, iss, aud, iat, nbf and exp."""
    if not secret_file.is_file():
        raise FileNotFoundError(
            f"{secret_file} not found: start the dev stack (make up) to generate it"
        )
    now = int(time.time())
    claims = {
        "sub": subject,
        "roles": [role.value for role in roles],
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret_file.read_bytes().strip(), algorithm="HS256")
