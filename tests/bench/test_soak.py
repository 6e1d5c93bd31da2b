"""The soak's whole path for under a minute at a low rate: system, probes, verdict, files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import asyncpg
import pytest

from bench import soak
from bench.soak_probe import client_sockets, descriptors
from tests import infra
from tests.e2e.system import SERVICES

pytestmark = pytest.mark.e2e

DURATION_S = 45
RATE = 5.0
PROCESSES = {
    "gateway",
    "payment-sandbox",
    "mail-catcher",
    *(f"{s}-api" for s in SERVICES),
    *(f"{s}-worker" for s in SERVICES),
}


@pytest.mark.timeout(480)
async def test_a_short_soak_passes_and_records_every_series(stack: None, tmp_path: Path) -> None:
    result = await soak.soak(duration=DURATION_S, rate=RATE, read_rate=RATE, name="soak-test")
    result["rate"]["source"] = "RATE"
    soak.judge(result)
    path = soak.write(result, tmp_path)
    assert result["verdict"]["ok"], soak.report(result)
    assert (tmp_path / "soak.png").stat().st_size > 0
    document = json.loads(path.read_text())
    assert set(document["verdict"]["checks"]) == set(soak.CHECKS)
    series = document["series"]
    assert len(series["t"]) >= DURATION_S / soak.sample_interval(DURATION_S) - 2
    assert set(series["processes"]) == PROCESSES
    assert len(series["seconds"]) == len(series["t"])
    assert isinstance(document["verdict"]["warnings"], list)
    for name, values in series["processes"].items():
        for key in ("rss_mib", "fds", "db_connections", "loop_lag_ms"):
            assert len(values[key]) == len(series["t"]), (name, key)
        assert all(v is not None for v in values["rss_mib"] + values["fds"]), name
        # Measured by the process itself (its /metrics) or, for the two doubles, from outside.
        assert all(v is not None for v in values["loop_lag_ms"]), name
        if name.endswith(("-api", "-worker")):
            assert max(values["db_connections"]) >= 1, name
        else:
            assert max(values["db_connections"]) == 0, name
    assert set(series["db_connections_by_database"]) == set(SERVICES)
    system = series["system"]
    assert set(system) == set(soak.SYSTEM_SERIES)
    assert all(len(values) == len(series["t"]) for values in system.values())
    # Orders and reads both passed the gateway, and every order placed is in the figures.
    assert document["orders"]["placed"] == pytest.approx(RATE * DURATION_S, rel=0.1)
    assert sum(system["placed"]) == document["orders"]["placed"]
    assert sum(system["requests"]) >= 1.8 * document["orders"]["placed"]


def test_the_rate_is_70_percent_of_the_last_saturation_or_of_a_default(tmp_path: Path) -> None:
    measured = tmp_path / "pipeline.json"
    measured.write_text(json.dumps({"saturated_sagas_per_s": 40.0}))
    assert soak.saturated_rate(measured)[0] == 40.0
    assert soak.saturated_rate(tmp_path / "absent.json")[0] == soak.DEFAULT_SATURATED_SAGAS_PER_S
    # A pipeline run of the burst part alone has no saturated rate.
    measured.write_text(json.dumps({"burst": {}}))
    assert soak.saturated_rate(measured)[0] == soak.DEFAULT_SATURATED_SAGAS_PER_S
    chosen = soak.settings({"DURATION": "10m", "RATE": "12"})
    assert chosen["duration"] == 600
    assert (chosen["rate"], chosen["read_rate"]) == (12.0, 12.0)
    assert soak.settings({})["duration"] == soak.DEFAULT_DURATION_S


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1h", 3600)])
def test_durations_are_read_in_seconds_minutes_or_hours(text: str, seconds: float) -> None:
    assert soak.parse_duration(text) == seconds


def test_a_duration_without_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        soak.parse_duration("soon")


async def test_a_database_connection_is_traced_to_the_process_that_holds_it(stack: None) -> None:
    conn = await asyncpg.connect(infra.database_url("postgres", "postgresql"))
    try:
        port = await conn.fetchval(
            "SELECT client_port FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
        )
        clients = client_sockets(infra.PG_PORT)
        count, sockets = descriptors(os.getpid())
        assert count is not None
        assert count >= len(sockets) >= 1
        assert [clients[s] for s in sockets if s in clients].count(port) == 1
    finally:
        await conn.close()
