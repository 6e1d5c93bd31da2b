"""The whole system as real processes on free ports: for end-to-end and fault tests.

Databases, topic prefix, sandbox ledger and mail store are the test's own; the Postgres,
Redis and Kafka servers are the shared ones of the dev stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from mercato_ops.settings import OpsSettings
from tests.e2e.processes import Process
from tests.infra import KAFKA, create_database, drop_database, free_port, random_prefix
from tests.kafka_tools import ensure_topics

SERVICES = ("order", "inventory", "payment", "notification")


class System:
    # Seconds each process has to answer its readiness check after a start.
    ready_within = 60.0

    def __init__(
        self,
        *,
        workdir: Path,
        keys: tuple[Path, Path],
        dev_secret: Path,
        databases: dict[str, str],
        prefix: str,
        extra_env: dict[str, str] | None = None,
        cached_catalogue: bool = False,
    ) -> None:
        self.workdir = workdir
        self.databases = databases
        self.prefix = prefix
        self.exit_codes: dict[str, int | None] = {}
        self.port = {
            name: free_port()
            for name in (
                "gateway",
                "sandbox",
                "smtp",
                "mail",
                *(f"{s}-api" for s in SERVICES),
                *(f"{s}-worker" for s in SERVICES),
            )
        }
        self.sandbox_url = f"http://127.0.0.1:{self.port['sandbox']}"
        self.mail_url = f"http://127.0.0.1:{self.port['mail']}"
        self.gateway_url = f"http://127.0.0.1:{self.port['gateway']}"
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "KAFKA_PREFIX": prefix,
            "IDENTITY_PUBLIC_KEYS": str(keys[1]),
            "CONSUMER_RETRY_BACKOFF_SECONDS": "0.05",
        }
        self.env: dict[str, dict[str, str]] = {}
        for service in SERVICES:
            upper = service.upper()
            env = {f"{upper}_{key}": value for key, value in common.items()}
            env |= {
                f"{upper}_DATABASE_URL": databases[service],
                f"{upper}_API_PORT": str(self.port[f"{service}-api"]),
                f"{upper}_WORKER_PORT": str(self.port[f"{service}-worker"]),
            }
            self.env[service] = env
        self.env["payment"] |= {
            "PAYMENT_SANDBOX_URL": self.sandbox_url,
            "PAYMENT_SANDBOX_TIMEOUT_SECONDS": "1.0",
        }
        self.env["notification"] |= {"NOTIFICATION_SMTP_PORT": str(self.port["smtp"])}
        self.env["order"] |= {"ORDER_SAGA_DEADLINE_SECONDS": "60"}
        routes: list[dict[str, object]] = [
            {"prefix": f"/api/v1/{path}", "upstreams": [f"http://127.0.0.1:{self.port[svc]}"]}
            for path, svc in (
                ("orders", "order-api"),
                ("products", "inventory-api"),
                ("payments", "payment-api"),
                ("notifications", "notification-api"),
            )
        ]
        if cached_catalogue:
            # As the gateway's default routes and the deployments have it; off otherwise, so
            # that a test reading stock right after changing it sees the change.
            routes[1]["cache"] = {}
        self.env["gateway"] = {
            "GATEWAY_PORT": str(self.port["gateway"]),
            "GATEWAY_IDENTITY_PRIVATE_KEY_FILE": str(keys[0]),
            "GATEWAY_REDIS_KEY_PREFIX": f"{prefix}rl:",
            "GATEWAY_ROUTES": json.dumps(routes),
            "GATEWAY_RATE_LIMITS": json.dumps(
                [
                    {"name": "user", "quota": 100000, "window_seconds": 60},
                    {"name": "anonymous", "quota": 100000, "window_seconds": 60},
                ]
            ),
            "GATEWAY_AUTH_ISSUERS": json.dumps(
                [
                    {
                        "issuer": "mercato-dev",
                        "audiences": ["mercato"],
                        "algorithms": ["HS256"],
                        "hs256_secret_file": str(dev_secret),
                    }
                ]
            ),
        }
        self.env["sandbox"] = {
            "SANDBOX_PORT": str(self.port["sandbox"]),
            "SANDBOX_DATABASE_PATH": str(workdir / "sandbox.db"),
        }
        self.env["mail"] = {
            "MAILCATCHER_SMTP_PORT": str(self.port["smtp"]),
            "MAILCATCHER_HTTP_PORT": str(self.port["mail"]),
            "MAILCATCHER_STORE": str(workdir / "mail.jsonl"),
        }
        for name in self.env:
            self.env[name] |= extra_env or {}
        self.processes: dict[str, Process] = {
            "payment-sandbox": self._process("payment-sandbox", "sandbox", "sandbox"),
            "mail-catcher": self._process("mail-catcher", "mail", "mail"),
            **{f"{s}-api": self._process(f"{s}-api", s, f"{s}-api") for s in SERVICES},
            **{f"{s}-worker": self._process(f"{s}-worker", s, f"{s}-worker") for s in SERVICES},
            "gateway": self._process("gateway", "gateway", "gateway"),
        }

    def _process(self, script: str, env: str, port: str) -> Process:
        return Process(script, self.env[env], health_port=self.port[port], logs=self.workdir)

    def ops_settings(self) -> OpsSettings:
        """What `mercato check` needs to look at this system."""
        return OpsSettings(
            gateway_url=self.gateway_url,
            order_database_url=self.databases["order"],
            inventory_database_url=self.databases["inventory"],
            payment_database_url=self.databases["payment"],
            notification_database_url=self.databases["notification"],
            sandbox_url=self.sandbox_url,
            mailcatcher_url=self.mail_url,
            kafka_prefix=self.prefix,
        )

    async def start(self) -> None:
        Process(
            "inventory-migrate",
            self.env["inventory"],
            health_port=0,
            logs=self.workdir,
            args=("--seed-demo",),
        ).run()
        for process in self.processes.values():
            process.start()
        await asyncio.gather(*(self.ready(name) for name in self.processes))

    async def ready(self, name: str) -> None:
        process = self.processes[name]
        path = "/api/messages" if name == "mail-catcher" else "/healthz"
        if name.endswith(("-api", "-worker")) or name == "gateway":
            path = "/readyz"
        await process.wait_ready(path, within=self.ready_within)

    def kill(self, name: str) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an OOM kill would do."""
        process = self.processes[name]
        assert process.proc is not None
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait(timeout=10)

    async def restart(self, name: str) -> None:
        self.processes[name].start()
        await self.ready(name)

    def stop(self) -> dict[str, int | None]:
        self.exit_codes = {
            name: process.stop() for name, process in reversed(self.processes.items())
        }
        return self.exit_codes

    def tails(self) -> str:
        return "\n\n".join(f"== {name} ==\n{p.tail(15)}" for name, p in self.processes.items())


@contextlib.asynccontextmanager
async def provisioned(
    *,
    workdir: Path,
    keys: tuple[Path, Path],
    dev_secret: Path,
    extra_env: dict[str, str] | None = None,
    prefix: str | None = None,
    ready_within: float = System.ready_within,
    cached_catalogue: bool = False,
) -> AsyncIterator[System]:
    """A started system on databases and topics of its own; stopped, its databases dropped after.

    The processes' exit codes are in ``system.exit_codes`` once the block has ended.
    """
    # One at a time: Alembic runs each in a thread with its own event loop.
    databases = {s: await create_database(f"{s}_service") for s in SERVICES}
    prefix = prefix or random_prefix()
    try:
        await ensure_topics(KAFKA, [f"{prefix}{t}" for t in ("orders", "inventory", "payments")])
        await ensure_topics(KAFKA, [f"{prefix}{s}.dlq" for s in SERVICES], partitions=1)
        system = System(
            workdir=workdir,
            keys=keys,
            dev_secret=dev_secret,
            databases=databases,
            prefix=prefix,
            extra_env=extra_env,
            cached_catalogue=cached_catalogue,
        )
        system.ready_within = ready_within
        try:
            await system.start()
            yield system
        except BaseException:
            print(system.tails())  # noqa: T201 - what the processes said, for a failed start
            raise
        finally:
            await asyncio.to_thread(system.stop)
    finally:
        await asyncio.gather(*(drop_database(url) for url in databases.values()))
