"""The whole system for the pipeline benchmark, started as the end-to-end tests start it.

Databases, topic prefix, sandbox ledger and mail store are the run's own; the Postgres, Redis
and Kafka servers are the shared ones of the dev stack, which stay up afterwards. A second
replica of every worker can join a running system: same settings, same consumer group, a
health port of its own, so Kafka splits each topic's six partitions between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx

from bench.common import STATE_DIR
from mercato_ops.token import make_token
from mercato_shared.identity import Role
from tests import infra
from tests.e2e.processes import Process
from tests.e2e.system import SERVICES, System, provisioned
from tests.infra import free_port
from tests.kafka_tools import delete_topics

# Products the orders draw from, restocked far beyond what a run can sell.
SKUS = ("MUG-BLUE", "MUG-RED", "TEE-M", "TEE-L", "SOCKS", "CAP")
RESTOCK = 10_000_000
READY_SECONDS = 180

# The gateway's rate policies for the run: the limiter stays on the path (one Redis call per
# request, as in production) with quotas no run comes near, so it never decides a rate; the
# burst of 5,000 orders from one customer would otherwise meet the per-user quota.
RATE_LIMITS = [
    {"name": "user", "quota": 10_000_000, "window_seconds": 60},
    {"name": "anonymous", "quota": 10_000_000, "window_seconds": 60},
]
# A burst leaves orders pending for minutes on a small machine; the order service's saga
# deadline (60 s in the end-to-end system) would cancel them and so empty the backlog by
# giving up, not by doing the work.
SAGA_DEADLINE_SECONDS = 900
BENCH_ENV = {
    # Measurement, not tracing: no exporter, so spans stay no-ops (as in production without).
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    "GATEWAY_RATE_LIMITS": json.dumps(RATE_LIMITS),
    "ORDER_SAGA_DEADLINE_SECONDS": str(SAGA_DEADLINE_SECONDS),
}


class Bench:
    """A running system, the secret its gateway trusts, and tokens signed with it."""

    def __init__(self, system: System, secret: Path) -> None:
        self.system = system
        self.secret = secret
        self.replicas: dict[str, Process] = {}

    def token(self, subject: str, *, admin: bool = False) -> str:
        role = Role.ADMIN if admin else Role.CUSTOMER
        return make_token(subject=subject, roles=[role], ttl_seconds=3600, secret_file=self.secret)

    async def restock(self) -> None:
        """Set every product the orders use to plenty, through the gateway's admin route.

        The processes start together, so the gateway's first health checks can find the
        inventory api not yet listening: it answers 503 until two checks in a row pass.
        """
        headers = {"Authorization": f"Bearer {self.token('bench-admin', admin=True)}"}
        async with httpx.AsyncClient(base_url=self.system.gateway_url, timeout=10) as client:
            for sku in SKUS:

                async def stocked(sku: str = sku) -> bool:
                    response = await client.put(
                        f"/api/v1/products/{sku}/stock",
                        json={"on_hand": RESTOCK},
                        headers=headers,
                    )
                    if response.status_code != 503:
                        response.raise_for_status()
                    return response.status_code != 503

                await infra.eventually(stocked, within=READY_SECONDS, interval=0.5)

    def pids(self) -> dict[str, int]:
        """The process id of every process of the system, by name, replicas included."""
        return {
            name: process.proc.pid
            for name, process in {**self.system.processes, **self.replicas}.items()
            if process.proc is not None
        }

    async def add_replicas(self) -> dict[str, int]:
        """Start a second process of every worker; their pids once each has partitions.

        A worker is ready once it has partitions assigned, which for the newcomer means the
        group's rebalance is done. Its log is ``replica-2/<service>-worker.log``.
        """
        logs = self.system.workdir / "replica-2"
        logs.mkdir(exist_ok=True)
        started: dict[str, Process] = {}
        for service in SERVICES:
            port = free_port()
            env = {**self.system.env[service], f"{service.upper()}_WORKER_PORT": str(port)}
            process = Process(f"{service}-worker", env, health_port=port, logs=logs)
            process.start()
            started[f"{service}-worker-2"] = process
            self.replicas[f"{service}-worker-2"] = process
        await asyncio.gather(
            *(p.wait_ready("/readyz", within=READY_SECONDS) for p in started.values())
        )
        self.check_running()
        return {name: p.proc.pid for name, p in started.items() if p.proc is not None}

    def check_running(self) -> None:
        """Fail the run if a process of the system has exited: what it measured would be wrong.

        On a shared machine a free port can be taken between its choice and the bind; the
        process then exits, and its readiness check may have been answered by the other one.
        """
        dead = {
            name: process
            for name, process in {**self.system.processes, **self.replicas}.items()
            if process.proc is None or process.proc.poll() is not None
        }
        if dead:
            tails = "\n".join(f"== {name} ==\n{p.tail(10)}" for name, p in dead.items())
            raise RuntimeError(f"exited during the run: {', '.join(dead)}\n{tails}")

    def stop_replicas(self) -> None:
        for process in self.replicas.values():
            process.stop()


@contextlib.asynccontextmanager
async def running_system(name: str = "pipeline") -> AsyncIterator[Bench]:
    """Start the gateway, the four services, the sandbox and the mail catcher; stop them after.

    Their logs go to ``<state>/bench/<name>``, so that two benchmarks keep theirs apart.
    """
    await infra.eventually(_stack_ready, within=60, interval=1.0)
    # Kept after the run (and replaced by the next one): the processes' logs explain a result.
    workdir = STATE_DIR / "bench" / name
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
            extra_env=BENCH_ENV,
            prefix=prefix,
            # Eleven Python processes importing at once on a small, busy machine can take
            # longer than the tests' minute to answer.
            ready_within=READY_SECONDS,
            # The catalogue as deployed: the gateway caches it (the soak reads it).
            cached_catalogue=True,
        ) as system:
            bench = Bench(system, secret)
            try:
                await bench.restock()
                bench.check_running()
                yield bench
            finally:
                await asyncio.to_thread(bench.stop_replicas)
    finally:
        await delete_topics(infra.KAFKA, prefix=prefix)


async def _stack_ready() -> bool:
    conn = await asyncpg.connect(infra.database_url("postgres", "postgresql"))
    await conn.close()
    return True
