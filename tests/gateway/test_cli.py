"""The ``gateway`` console script: one process, or several behind one port
(``GATEWAY_WORKERS``) with one /metrics.

Real ``gateway`` processes: the supervisor, its serving processes, and the files of
prometheus-client's multiprocess mode they share.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import Process
from tests.gateway.limits_support import gateway_environment
from tests.gateway.rawhttp import read_answer, request
from tests.gateway.support import EchoServer
from tests.infra import eventually, free_port

pytestmark = pytest.mark.e2e

PREFIX = "/api/v1/products"
SERIES = re.compile(r"^gateway_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
SERVED = {f'route="{PREFIX}"', 'method="GET"', 'status="200"'}


@pytest.fixture(scope="module")
async def echo():
    async with EchoServer("echo") as server:
        yield server


def _workers(parent: int) -> set[int]:
    """The serving processes of the supervisor ``parent`` (not multiprocessing's helpers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and b"spawn_main" in command:
            found.add(int(stat.parent.name))
    return found


def _running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


async def _two_workers(parent: int) -> set[int] | None:
    workers = _workers(parent)
    return workers if len(workers) == 2 else None


def _multiprocess_directory(pid: int) -> Path:
    """The metrics directory in the environment of process ``pid``."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.decode().partition("=")
        if name == "PROMETHEUS_MULTIPROC_DIR":
            return Path(value)
    raise AssertionError(f"process {pid} has no metrics directory")


def _owner(server_port: int, client_port: int, candidates: set[int]) -> int:
    """Which of ``candidates`` holds the server's end of the connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.rpartition(":")[2], 16) for address in fields[1:3])
        if (local, remote) == (server_port, client_port):
            inode = fields[9]
    assert inode is not None, "no server socket for the connection"
    for pid in candidates:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker holds socket {inode}")


async def _served(port: int) -> float:
    """Requests the route answered with 200, counted over every process, by /metrics."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200, response.text
    # In multiprocess mode the labels come sorted by name.
    return sum(
        float(m[2]) for m in SERIES.finditer(response.text) if set(m[1].split(",")) == SERVED
    )


async def _get_on_new_connections(port: int, count: int) -> None:
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits) as client:
        answers = await asyncio.gather(
            *(client.get(f"http://127.0.0.1:{port}{PREFIX}/{i}") for i in range(count))
        )
    assert [a.status_code for a in answers] == [200] * count


def _started(
    tmp_path: Path, keys, dev_secret, echo: EchoServer, *, workers: int = 2, **env: str
) -> Process:
    port = free_port()
    environment = gateway_environment(
        port=port,
        keys=keys,
        secret_file=dev_secret,
        routes={PREFIX: echo.url},
        GATEWAY_WORKERS=str(workers),
        **env,
    )
    process = Process("gateway", environment, health_port=port, logs=tmp_path)
    process.start()
    return process


async def test_two_workers_serve_one_port_and_one_metrics_page_counts_them_all(
    stack, keys, dev_secret, echo, tmp_path
):
    directory = tmp_path / "metrics"
    directory.mkdir()
    # A file of an earlier run would make /metrics fail to read, or count what it holds.
    (directory / "counter_999999.db").write_bytes(b"left over from an earlier run")
    process = _started(tmp_path, keys, dev_secret, echo, PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        await process.wait_ready()
        assert process.proc is not None
        parent = process.proc.pid
        await eventually(lambda: _two_workers(parent))
        await _get_on_new_connections(process.health_port, 120)
        assert await _served(process.health_port) == 120
        pids = {int(p.stem.rpartition("_")[2]) for p in directory.glob("counter_*.db")}
        assert pids == _workers(parent)
    finally:
        code = process.stop()
    assert code == 0
    # A worker that exits takes its live gauges with it, and leaves its counts.
    assert not list(directory.glob("gauge_live*"))
    assert len(list(directory.glob("counter_*.db"))) == 2


async def test_a_killed_worker_is_replaced_and_its_counts_are_kept(
    stack, keys, dev_secret, echo, tmp_path
):
    process = _started(tmp_path, keys, dev_secret, echo)
    try:
        await process.wait_ready()
        assert process.proc is not None
        parent, port = process.proc.pid, process.health_port
        workers = await eventually(lambda: _two_workers(parent))
        directory = _multiprocess_directory(min(workers))
        # Ten requests on one kept-alive connection: one worker answers them all.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(10):
            writer.write(request(f"{PREFIX}/{i}"))
            assert (await read_answer(reader)).status == 200
        victim = _owner(port, writer.get_extra_info("sockname")[1], workers)
        assert (directory / f"gauge_livemax_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        writer.close()

        async def replaced() -> bool:
            # Its live gauges go when its replacement joins.
            now = _workers(parent)
            gone = not (directory / f"gauge_livemax_{victim}.db").exists()
            return len(now) == 2 and victim not in now and gone

        await eventually(replaced, within=30)
        await _get_on_new_connections(port, 10)
        # The victim's counts stay.
        assert await _served(port) == 20
        survivors = _workers(parent)
    finally:
        code = process.stop()
    assert code == 0
    assert not _running(survivors)
    # The directory the supervisor made for itself goes with it.
    assert not directory.exists()


async def test_workers_that_cannot_start_stop_the_supervisor(
    stack, keys, dev_secret, echo, tmp_path
):
    process = _started(
        tmp_path,
        keys,
        dev_secret,
        echo,
        GATEWAY_IDENTITY_PRIVATE_KEY_FILE=str(tmp_path / "missing.pem"),
    )
    assert process.proc is not None
    try:
        # uvicorn's exit status for a server that could not start, not a restart loop.
        assert await asyncio.to_thread(process.proc.wait, 60) == 3
    finally:
        process.stop()


@pytest.mark.parametrize("workers", [1, 2])
async def test_each_request_is_logged_once_by_the_gateway(
    stack, keys, dev_secret, echo, tmp_path, workers
):
    process = _started(tmp_path, keys, dev_secret, echo, workers=workers, GATEWAY_LOG_LEVEL="INFO")
    try:
        await process.wait_ready()
        await _get_on_new_connections(process.health_port, 5)

        def loggers() -> list[str]:
            lines = process.log_path.read_text().splitlines()
            return [json.loads(line)["logger"] for line in lines if f" {PREFIX}/" in line]

        async def logged() -> list[str] | None:
            found = await asyncio.to_thread(loggers)
            return found if len(found) >= 5 else None

        # uvicorn's own access line stays off: the gateway writes one line per request.
        assert await eventually(logged) == ["gateway.access"] * 5
    finally:
        process.stop()
