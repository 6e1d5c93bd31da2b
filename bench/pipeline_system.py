"""The whole system for the pipeline benchmark, started as the end-to-end tests start it.

Databases, topic prefix, sandbox ledger and mail store are the run's own; the Postgres, Redis
and Kafka servers are the shared ones of the dev stack, which stay up afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.common import STATE_DIR
from mercato_ops.token import make_token
from mercato_shared.identity import Role
from tests import infra
from tests.e2e.system import System, provisioned

# Products the orders draw from, restocked far beyond what a run can sell.
SKUS = ("MUG-BLUE", "MUG-RED", "TEE-M", "TEE-L", "SOCKS", "CAP")
RESTOCK = 10_000_000
READY_SECONDS = 180

# Measurement, not tracing: no exporter, so spans stay no-ops (as in production without one).
QUIET_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}


class Bench:
    """A running system, the secret its gateway trusts, and tokens signed with it."""

    def __init__(self, system: System, secret: Path) -> None:
        self.system = system
        self.secret = secret

    def token(self, subject: str, *, admin: bool = False) -> str:
        role = Role.ADMIN if admin else Role.CUSTOMER
        return make_token(subject=subject, roles=[role], ttl_seconds=3600, secret_file=self.secret)

    async def restock(self) -> None:
        """Set every product the orders use to plenty, through the gateway's admin route."""
        headers = {"Authorization": f"Bearer {self.token('bench-admin', admin=True)}"}
        async with httpx.AsyncClient(base_url=self.system.gateway_url, timeout=10) as client:
            for sku in SKUS:
                response = await client.put(
                    f"/api/v1/products/{sku}/stock", json={"on_hand": RESTOCK}, headers=headers
                )
                response.raise_for_status()

    def pids(self) -> dict[str, int]:
        """The process id of every process of the system, by name."""
        return {
            name: process.proc.pid
            for name, process in self.system.processes.items()
            if process.proc is not None
        }


@contextlib.asynccontextmanager
async def running_system() -> AsyncIterator[Bench]:
    """Start the gateway, the four services, the sandbox and the mail catcher; stop them after."""
    await infra.eventually(_stack_ready, within=60, interval=1.0)
    # Kept after the run (and replaced by the next one): the processes' logs explain a result.
    workdir = STATE_DIR / "bench" / "pipeline"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    keys = infra.write_keypair(workdir)
    secret = workdir / "dev-token-secret"
    secret.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    prefix = infra.random_prefix()
    try:
        async with provisioned(
            workdir=workdir,
            keys=keys,
            dev_secret=secret,
            extra_env=QUIET_ENV,
            prefix=prefix,
            # Eleven Python processes importing at once on a small, busy machine can take
            # longer than the tests' minute to answer.
            ready_within=READY_SECONDS,
        ) as system:
            bench = Bench(system, secret)
            await bench.restock()
            yield bench
    finally:
        await _delete_topics(prefix)


async def _delete_topics(prefix: str) -> None:
    """Leave the shared broker as it was found."""
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.KAFKA)
    await admin.start()
    try:
        ours = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    except KafkaError as exc:
        print(f"topics under {prefix} left behind: {exc!r}")
    finally:
        await admin.close()


async def _stack_ready() -> bool:
    conn = await asyncpg.connect(infra.database_url("postgres", "postgresql"))
    await conn.close()
    return True
