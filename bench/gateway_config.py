"""The gateway as the benchmark runs it: its own process, configured through GATEWAY_* only.

One gateway serves three routes to the same upstream: `/open/...` is public and exempt from
rate limiting (routing only), `/private/...` needs an ES256 token from a JWKS issuer and
takes one Redis rate-limit call per request (the full path), and `/catalogue/...` is
`/open/...` with the route's cache on (as nginx's `proxy_cache` is in front of it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.gateway_servers import Processes, wait_for_http

ISSUER = "https://login.bench.invalid"
AUDIENCE = "mercato"
KEY_ID = "bench-1"
OPEN_PATH = "/open/item"
PRIVATE_PATH = "/private/item"
CATALOGUE_PATH = "/catalogue/item"
# As long as nginx's proxy_cache_valid: within a run, every read after the first is a hit.
CACHE_SECONDS = 60
# Far above anything one machine can send in a window: the limiter runs, never refuses.
UNLIMITED = {"name": "bench", "quota": 1_000_000_000, "window_seconds": 60}


class Keys:
    """The identity provider's signing key (published as a JWKS) and the gateway's own."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.provider = ec.generate_private_key(ec.SECP256R1())
        self.identity_file = directory / "identity.pem"
        self.identity_file.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def jwks(self) -> bytes:
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.provider.public_key()))
        return json.dumps(
            {"keys": [public | {"kid": KEY_ID, "alg": "ES256", "use": "sig"}]}
        ).encode()

    def bearer(self, *, subject: str = "bench-user", lifetime: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "roles": ["customer"],
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + lifetime,
        }
        token = jwt.encode(claims, self.provider, algorithm="ES256", headers={"kid": KEY_ID})
        return f"Bearer {token}"


def gateway_env(
    *,
    port: int,
    upstream_port: int,
    keys: Keys,
    tracing: str | None,
    verified_cache_seconds: float = 0,
    workers: int = 1,
    access_log: bool = True,
) -> dict[str, str]:
    """The complete environment of one gateway; ``tracing``: None, or the sampler ratio."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    settings: dict[str, Any] = {
        "HOST": "127.0.0.1",
        "PORT": port,
        "WORKERS": workers,
        # The access line is logged at info.
        "LOG_LEVEL": "INFO" if access_log else "WARNING",
        "IDENTITY_PRIVATE_KEY_FILE": str(keys.identity_file),
        "REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
        "ROUTES": [
            {"prefix": "/open", "upstreams": [upstream], "rate_limited": False},
            {"prefix": "/private", "upstreams": [upstream], "rate_limit": "bench"},
            {
                "prefix": "/catalogue",
                "upstreams": [upstream],
                "rate_limited": False,
                "cache": {"ttl_seconds": CACHE_SECONDS},
            },
        ],
        "ACCESS": [
            {"path": "/open/**", "public": True},
            {"path": "/catalogue/**", "public": True},
            {"path": "/private/**", "roles": ["customer"]},
        ],
        "AUTH_ISSUERS": [
            {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "algorithms": ["ES256"],
                "jwks_url": f"{upstream}/jwks.json",
                "verified_cache_seconds": verified_cache_seconds,
            }
        ],
        "RATE_LIMITS": [
            {"name": "user", "quota": 300, "window_seconds": 60},
            {"name": "anonymous", "quota": 60, "window_seconds": 60},
            UNLIMITED,
        ],
    }
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GATEWAY_", "OTEL_"))
    }
    env |= {
        f"GATEWAY_{name}": value if isinstance(value, str) else json.dumps(value)
        for name, value in settings.items()
    }
    if tracing is not None:
        # The upstream nginx doubles as the OTLP/HTTP sink (it answers 200 and drops spans).
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = upstream
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = tracing
    return env


def start_gateway(
    processes: Processes, name: str, env: dict[str, str], *, port: int
) -> subprocess.Popen[bytes]:
    """The `gateway` console script of this environment, ready once /healthz answers."""
    script = Path(sys.executable).parent / "gateway"
    process = processes.start(name, [str(script)], env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
    except RuntimeError:
        processes.check_alive()
        raise
    return process
