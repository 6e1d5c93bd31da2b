"""A real gateway process with short HTTP deadlines."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from tests.e2e.processes import Process
from tests.infra import free_port

# Deadlines short enough for tests, long enough for a loaded two-core machine to meet.
SHORT_DEADLINES = {
    "GATEWAY_HEADER_TIMEOUT_SECONDS": "1",
    "GATEWAY_BODY_IDLE_TIMEOUT_SECONDS": "1",
    "GATEWAY_MIN_BODY_BYTES_PER_SECOND": "50",
    "GATEWAY_BODY_RATE_GRACE_SECONDS": "1",
    "GATEWAY_KEEP_ALIVE_TIMEOUT_SECONDS": "1",
}


@contextlib.asynccontextmanager
async def gateway_process(
    *,
    keys: tuple[Path, Path],
    secret_file: Path,
    logs: Path,
    routes: dict[str, str],
    **env: str,
) -> AsyncIterator[int]:
    """A ``gateway`` process routing (public) prefixes to upstream URLs; yields its port."""
    port = free_port()
    environment = {
        "GATEWAY_PORT": str(port),
        "GATEWAY_LOG_LEVEL": "WARNING",
        "GATEWAY_IDENTITY_PRIVATE_KEY_FILE": str(keys[0]),
        "GATEWAY_REDIS_KEY_PREFIX": f"t-{uuid.uuid4().hex[:8]}:",
        "GATEWAY_AUTH_ISSUERS": json.dumps(
            [
                {
                    "issuer": "mercato-dev",
                    "audiences": ["mercato"],
                    "algorithms": ["HS256"],
                    "hs256_secret_file": str(secret_file),
                }
            ]
        ),
        "GATEWAY_ROUTES": json.dumps(
            [{"prefix": prefix, "upstreams": [url]} for prefix, url in routes.items()]
        ),
        "GATEWAY_ACCESS": json.dumps([{"path": f"{p}/**", "public": True} for p in routes]),
        "GATEWAY_RATE_LIMITS": json.dumps(
            [
                {"name": "user", "quota": 100_000, "window_seconds": 60},
                {"name": "anonymous", "quota": 100_000, "window_seconds": 60},
            ]
        ),
        **env,
    }
    process = Process("gateway", environment, health_port=port, logs=logs)
    process.start()
    try:
        await process.wait_ready()
        yield port
    finally:
        process.stop()
