"""The database's own limit for the saga: pgbench running bench/pgbench/saga.sql.

saga.sql holds the twelve transactions of one confirmed order (see COMMITS_PER_SAGA in
pipeline.py), so pgbench's rate is already in sagas per second; commits per second is that
times twelve. It runs on a throwaway database of the same Postgres server the services use,
with the server's own commit settings, as the services run with them.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

import asyncpg

from bench.common import BENCH_DIR, tool
from tests import infra

SCRIPT_DIR = BENCH_DIR / "pgbench"


def _figure(output: str, pattern: str) -> float:
    found = re.search(pattern, output)
    if found is None:
        raise RuntimeError(f"pgbench output lacks {pattern!r}:\n{output}")
    return float(found.group(1))


async def measure(*, clients: int, seconds: int, commits_per_saga: int) -> dict[str, Any]:
    """Run saga.sql with ``clients`` connections for ``seconds``; sagas and commits per second."""
    url = await infra.create_database(None)
    name = url.rsplit("/", 1)[1]
    try:
        conn = await asyncpg.connect(infra.database_url(name, "postgresql"))
        try:
            await conn.execute((SCRIPT_DIR / "schema.sql").read_text())
            synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
        finally:
            await conn.close()
        command = [
            tool("pgbench"),
            *("-h", infra.PG_HOST, "-p", str(infra.PG_PORT), "-U", infra.PG_USER),
            "--no-vacuum",
            # Prepared statements, as asyncpg's statement cache gives the services.
            *("--protocol", "prepared"),
            *("--file", str(SCRIPT_DIR / "saga.sql")),
            *("--client", str(clients), "--jobs", str(min(clients, os.cpu_count() or 1))),
            *("--time", str(seconds)),
            name,
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**os.environ, "PGPASSWORD": infra.PG_PASSWORD},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        raw, _ = await process.communicate()
        output = raw.decode(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"pgbench failed ({process.returncode}):\n{output}")
    finally:
        await infra.drop_database(url)
    sagas = _figure(output, r"tps = ([\d.]+) \(without initial connection time\)")
    return {
        "clients": clients,
        "seconds": seconds,
        "synchronous_commit": synchronous_commit,
        "sagas": int(_figure(output, r"number of transactions actually processed: (\d+)")),
        "sagas_per_s": round(sagas, 1),
        "commits_per_s": round(sagas * commits_per_saga, 1),
        "saga_latency_ms": _figure(output, r"latency average = ([\d.]+) ms"),
    }
