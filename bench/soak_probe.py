"""What the soak watches per process every few seconds: memory, descriptors, connections, lag.

RSS and open descriptors come from /proc. Database connections are pg_stat_activity's backends
on the system's databases; the services set no ``application_name``, so each backend is
matched to the process holding its client socket (its ``client_port`` against the sockets in
/proc/<pid>/fd, through /proc/net/tcp), and the backends are counted per database as well.
Event-loop lag is each process's own ``mercato_event_loop_lag_seconds`` from its /metrics; the
sandbox and the mail catcher serve none, so theirs is the time to answer a small HTTP request,
measured from outside (an upper bound). The gateway's request counters by status give the
failed requests of each interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.pipeline_probe import plain_url

PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20
LOOP_LAG = "mercato_event_loop_lag_seconds"
GATEWAY_REQUESTS = "gateway_requests"


@dataclass(frozen=True)
class Endpoint:
    """Where a process answers: its /metrics, or (``outside``) a path only timed."""

    url: str
    outside: bool = False


@dataclass
class ProcessSample:
    rss_mib: float | None
    fds: int | None
    db_connections: int
    loop_lag_ms: float | None


@dataclass
class ResourceSample:
    t: float  # wall clock, seconds since the epoch
    processes: dict[str, ProcessSample]
    db_by_database: dict[str, int]  # backends per service database, whoever the client
    gateway_statuses: dict[str, int] = field(default_factory=dict)  # cumulative, by status


def _rss_mib(pid: int) -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MIB
    except (OSError, IndexError, ValueError):
        return None


def descriptors(pid: int) -> tuple[int | None, set[str]]:
    """How many descriptors ``pid`` has open, and the inodes of its sockets among them."""
    directory = f"/proc/{pid}/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return None, set()
    sockets = set()
    for name in names:
        with contextlib.suppress(OSError):  # closed between the listing and the read
            target = os.readlink(f"{directory}/{name}")
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
    return len(names), sockets


def client_sockets(server_port: int) -> dict[str, int]:
    """Socket inode to local port, of every TCP connection to ``server_port`` on this host."""
    found: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(remote.rsplit(":", 1)[1], 16) == server_port:
                    found[inode] = int(local.rsplit(":", 1)[1], 16)
    return found


class ResourceProbe:
    """Samples every process's resources and the gateway's request counts until stopped."""

    def __init__(
        self,
        *,
        pids: dict[str, int],
        endpoints: dict[str, Endpoint],
        databases: dict[str, str],
        admin_url: str,
        interval: float,
    ) -> None:
        self._pids = pids
        self._endpoints = endpoints
        self._names = {url.rsplit("/", 1)[1]: service for service, url in databases.items()}
        self._admin_url = plain_url(admin_url)
        self._server_port = int(self._admin_url.rsplit(":", 1)[1].split("/", 1)[0])
        self._interval = interval
        self.samples: list[ResourceSample] = []
        self._conn: asyncpg.Connection | None = None
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(self._admin_url)
        self._client = httpx.AsyncClient(timeout=5)
        self.samples.append(await self.sample())
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()
        if self._conn is not None:
            self._conn.terminate()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.samples.append(await self.sample())
            except (OSError, asyncpg.PostgresError, httpx.HTTPError) as exc:
                print(f"soak probe: sample skipped: {exc!r}")

    async def sample(self) -> ResourceSample:
        """One sample of every process, now."""
        if self._conn is None or self._client is None:
            raise RuntimeError("the probe has not been started")
        backends = await self._conn.fetch(
            "SELECT datname, client_port FROM pg_stat_activity WHERE datname = ANY($1::text[])",
            list(self._names),
        )
        by_database = dict.fromkeys(self._names.values(), 0)
        ports = set()
        for row in backends:
            by_database[self._names[row["datname"]]] += 1
            # NULL for a backend still authenticating, -1 for one on a Unix socket.
            if row["client_port"] is not None and row["client_port"] > 0:
                ports.add(row["client_port"])
        clients = client_sockets(self._server_port)
        client = self._client
        scraped = await asyncio.gather(*(self._scrape(client, e) for e in self._endpoints.values()))
        lags = dict(zip(self._endpoints, (lag for lag, _ in scraped), strict=True))
        statuses = next((s for _, s in scraped if s), {})
        processes = {}
        for name, pid in self._pids.items():
            fds, sockets = descriptors(pid)
            processes[name] = ProcessSample(
                rss_mib=_rss_mib(pid),
                fds=fds,
                db_connections=sum(1 for s in sockets if s in clients and clients[s] in ports),
                loop_lag_ms=lags.get(name),
            )
        return ResourceSample(time.time(), processes, by_database, statuses)

    @staticmethod
    async def _scrape(
        client: httpx.AsyncClient, endpoint: Endpoint
    ) -> tuple[float | None, dict[str, int]]:
        """A process's event-loop lag in ms, and the gateway's requests by status if it is it."""
        started = time.perf_counter()
        try:
            response = await client.get(endpoint.url)
        except httpx.HTTPError:
            return None, {}
        if endpoint.outside:
            return round(1000 * (time.perf_counter() - started), 2), {}
        lag: float | None = None
        statuses: dict[str, int] = {}
        for family in text_string_to_metric_families(response.text):
            if family.name == LOOP_LAG:
                lag = max((round(1000 * s.value, 2) for s in family.samples), default=None)
            elif family.name == GATEWAY_REQUESTS:
                for s in family.samples:
                    if s.name.endswith("_total"):
                        status = s.labels["status"]
                        statuses[status] = statuses.get(status, 0) + int(s.value)
        return lag, statuses


def as_json(sample: ResourceSample, origin: float) -> dict[str, Any]:
    """A sample for the result file, its time relative to the run's start."""
    return {
        "t": round(sample.t - origin, 2),
        "processes": {
            name: {
                "rss_mib": None if p.rss_mib is None else round(p.rss_mib, 1),
                "fds": p.fds,
                "db_connections": p.db_connections,
                "loop_lag_ms": p.loop_lag_ms,
            }
            for name, p in sample.processes.items()
        },
        "db_by_database": sample.db_by_database,
        "gateway_statuses": sample.gateway_statuses,
    }
