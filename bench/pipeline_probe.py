"""What the pipeline benchmark watches while it loads the system, sampled a few times a second.

Consumer lag comes from Kafka itself (each group's committed offsets against the partitions'
ends) and outbox backlog from each service's database, rather than from the processes' own
gauges, which are only refreshed between batches and so go stale exactly when a worker falls
behind. CPU time per process comes from /proc, to show where the time goes. Commits come from
pg_stat_database for the system's own databases only, less the probe's own queries (each one
is a transaction of its own there, about a dozen a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from mercato_shared.kafka import PARTITIONS
from tests.e2e.system import SERVICES

# Which topics each service's worker consumes (their worker.py specs).
SUBSCRIPTIONS = {
    "order": ("inventory", "payments"),
    "inventory": ("orders",),
    "payment": ("inventory", "orders"),
    "notification": ("orders",),
}
TICKS = os.sysconf("SC_CLK_TCK")


def plain_url(url: str) -> str:
    """An asyncpg URL from a SQLAlchemy one."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime, fields 14 and 15 of proc(5), counted after the command name.
    return (int(fields[11]) + int(fields[12])) / TICKS


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


@dataclass
class Sample:
    t: float  # wall clock, seconds since the epoch
    lag: dict[str, int]  # per consumer group (service)
    outbox: dict[str, int]  # per service
    pending: int  # orders neither CONFIRMED nor CANCELLED
    commits: dict[str, int]  # pg_stat_database.xact_commit per service database, probe's out
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per process
    machine_busy: float = 0.0  # share of all cores


class Probe:
    """Samples lag, backlog, pending orders, commits and CPU until stopped."""

    def __init__(
        self,
        *,
        databases: dict[str, str],
        kafka: str,
        prefix: str,
        pids: dict[str, int],
        interval: float = 0.5,
    ) -> None:
        self._databases = databases
        self._kafka = kafka
        self._prefix = prefix
        self._pids = pids
        self._interval = interval
        self.samples: list[Sample] = []
        self._connections: dict[str, asyncpg.Connection] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Transactions the probe itself ran, per service database.
        self._own: Counter[str] = Counter()

    async def start(self) -> None:
        for service, url in self._databases.items():
            self._connections[service] = await asyncpg.connect(plain_url(url))
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._kafka)
        await self._admin.start()
        self._ends = AIOKafkaConsumer(bootstrap_servers=self._kafka, enable_auto_commit=False)
        await self._ends.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ends is not None:
            await self._ends.stop()
        if self._admin is not None:
            await self._admin.close()
        for conn in self._connections.values():
            # A sample cancelled mid-query leaves its connection busy: no goodbye needed.
            conn.terminate()

    @property
    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def watch(self, pids: dict[str, int]) -> None:
        """Account the CPU of more processes (worker replicas) from the next sample on."""
        self._pids = {**self._pids, **pids}

    async def _query(self, service: str, query: str, *args: Any) -> Any:
        """One value from a service database, counted as one of the probe's transactions."""
        self._own[service] += 1
        return await self._connections[service].fetchval(query, *args)

    async def _run(self) -> None:
        last_cpu = {name: _cpu_seconds(pid) for name, pid in self._pids.items()}
        last_pg = await self._postgres_seconds()
        last_machine = _machine_busy()
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            try:
                lag, (outbox, pending, commits) = await asyncio.gather(
                    self._lag(), self._databases_now()
                )
            except (OSError, asyncpg.PostgresError, KafkaError) as exc:
                print(f"probe: sample skipped: {exc!r}")
                continue
            now = time.monotonic()
            elapsed = now - last_t
            cpu: dict[str, float] = {}
            for name, pid in self._pids.items():
                seconds = _cpu_seconds(pid)
                before = last_cpu.get(name)
                if seconds is not None and before is not None:
                    cpu[name] = (seconds - before) / elapsed
                last_cpu[name] = seconds
            pg = await self._postgres_seconds()
            cpu["postgres"] = sum(pg[pid] - last_pg.get(pid, pg[pid]) for pid in pg) / elapsed
            last_pg = pg
            busy, total = _machine_busy()
            machine = (busy - last_machine[0]) / max(1, total - last_machine[1])
            last_machine, last_t = (busy, total), now
            self.samples.append(
                Sample(time.time(), lag, outbox, pending, commits, cpu, machine_busy=machine)
            )

    async def _lag(self) -> dict[str, int]:
        if self._admin is None or self._ends is None:
            raise RuntimeError("the probe has not been started")
        partitions = [
            TopicPartition(f"{self._prefix}{topic}", p)
            for topic in ("orders", "inventory", "payments")
            for p in range(PARTITIONS)
        ]
        ends = await self._ends.end_offsets(partitions)
        lag: dict[str, int] = {}
        for service in SERVICES:
            group = f"{self._prefix}{service}-worker"
            committed = await self._admin.list_consumer_group_offsets(group)
            topics = {f"{self._prefix}{t}" for t in SUBSCRIPTIONS[service]}
            lag[service] = sum(
                end - max(0, committed[tp].offset if tp in committed else 0)
                for tp, end in ends.items()
                if tp.topic in topics
            )
        return lag

    async def _databases_now(self) -> tuple[dict[str, int], int, dict[str, int]]:
        """Outbox rows per service, pending orders, commits per database."""
        # One query at a time per connection: the order database's one serves three.
        services = [s for s in self._connections if s != "notification"]  # consumes only
        counts = await asyncio.gather(
            *(self._query(s, "SELECT count(*) FROM outbox") for s in services)
        )
        pending = await self._pending()
        commits = await self._commits()
        return dict(zip(services, map(int, counts), strict=True)), pending, commits

    async def _pending(self) -> int:
        return int(
            await self._query("order", "SELECT count(*) FROM orders WHERE status = 'PENDING'")
        )

    async def _commits(self) -> dict[str, int]:
        names = {url.rsplit("/", 1)[1]: service for service, url in self._databases.items()}
        # One value, so that it goes through _query: a JSON object of database to commits.
        raw = await self._query(
            "order",
            "SELECT json_object_agg(datname, xact_commit)::text FROM pg_stat_database"
            " WHERE datname = ANY($1::text[])",
            list(names),
        )
        seen = json.loads(raw or "{}")
        return {names[name]: int(value) - self._own[names[name]] for name, value in seen.items()}

    async def _postgres_seconds(self) -> dict[int, float]:
        """CPU seconds of the Postgres backends serving this system's databases."""
        names = [url.rsplit("/", 1)[1] for url in self._databases.values()]
        pids = await self._query(
            "order",
            "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            names,
        )
        seconds = {}
        for pid in pids or ():
            value = _cpu_seconds(int(pid))
            if value is not None:
                seconds[int(pid)] = value
        return seconds


@dataclass(frozen=True)
class Finished:
    """One order as the order service stored it."""

    customer: str
    status: str
    created: float  # epoch seconds, the POST's transaction
    ended: float | None  # epoch seconds of the terminal history entry; None while pending


async def orders(database_url: str) -> list[Finished]:
    """Every order with its creation time and, once final, the time it became final."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        rows = await conn.fetch(
            """
            SELECT o.customer_id, o.status, o.created_at,
                   (SELECT max(h.at) FROM order_history h
                     WHERE h.order_id = o.id AND h.status <> 'PENDING') AS ended_at
            FROM orders o
            """
        )
    finally:
        await conn.close()
    return [
        Finished(
            customer=row["customer_id"],
            status=row["status"],
            created=row["created_at"].timestamp(),
            ended=None if row["ended_at"] is None else row["ended_at"].timestamp(),
        )
        for row in rows
    ]


def as_json(sample: Sample, origin: float) -> dict[str, Any]:
    """A sample for the result file, its time relative to the run's start."""
    return {
        "t": round(sample.t - origin, 2),
        "lag": sample.lag,
        "outbox": sample.outbox,
        "pending": sample.pending,
        "cpu": {name: round(value, 3) for name, value in sample.cpu.items()},
        "machine_busy": round(sample.machine_busy, 3),
    }


async def handling_times(ports: dict[str, int]) -> dict[str, dict[str, float]]:
    """Mean milliseconds per handled event, by worker and event type, from their /metrics.

    Handling includes the inbox write, the handler (and any call it makes, to the card
    processor or the mail server) and the commit: the time one event holds its worker.
    """
    means: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for service in SERVICES:
            response = await client.get(f"http://127.0.0.1:{ports[f'{service}-worker']}/metrics")
            sums: dict[str, float] = {}
            counts: dict[str, float] = {}
            for family in text_string_to_metric_families(response.text):
                if family.name != "mercato_event_processing_seconds":
                    continue
                for sample in family.samples:
                    kind = sample.labels.get("type", "")
                    if sample.name.endswith("_sum"):
                        sums[kind] = sample.value
                    elif sample.name.endswith("_count"):
                        counts[kind] = sample.value
            means[service] = {
                kind: round(1000 * sums[kind] / counts[kind], 2)
                for kind in sums
                if counts.get(kind)
            }
    return means
