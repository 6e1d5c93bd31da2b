"""Micro-benchmarks: the gateway's rate limiter beside plain Redis INCR, breaker overhead, and
the cost of the gateway's HTTP limits per request (``micro_limits``), and the CPU a saga
step's statement costs through SQLAlchemy's session and as ``Sql`` on asyncpg (``micro_sql``).

The limiter runs as the gateway runs it: ``RateLimiter.check`` on a ``redis_client`` pool,
on uvloop, with N concurrent callers. Beside it, in the same run and on a pool with the same
settings: the bare GCRA script (the limiter minus its Python), one INCR per call, and one
pipeline of N INCRs per round trip. Round trips are counted twice: on the client (one per
write to a socket) and in Redis (INFO commandstats). Writes `results/micro.json` and
`results/micro-ratelimit.png`, `results/micro-breaker.png`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import uvloop
from matplotlib.figure import Figure
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench import micro_breaker, micro_limits, micro_sql
from bench.common import plot_path, save
from gateway.ratelimit import LocalGcra, RateLimiter, RatePolicy, redis_client
from tests.gateway.support import CountingConnection

REDIS_URL = os.environ.get("MERCATO_BENCH_REDIS", "redis://127.0.0.1:6379/0")
CONCURRENCY = (1, 16, 64)
# Rounds visit every (series, concurrency) cell in turn, so a burst of noise from a
# neighbour lands on one cell of one round; each cell reports its best round.
ROUNDS = 3
CELL_SECONDS = 1.0
WARMUP_SECONDS = 0.3
SERIES = ("limiter", "script", "incr", "pipeline")
# The limiter's client with a roomier timeout: on a busy machine a 100 ms stall would send
# the limiter to its fallback and measure that instead. Only failures depend on the value.
CLIENT_TIMEOUT = 1.0
# Every allowed: the common path, where the script also writes the bucket back.
POLICY = RatePolicy(name="bench", quota=1_000_000, window_seconds=1)
LOCAL_SECONDS = 1.0


def _client() -> Redis:
    client = redis_client(REDIS_URL, timeout=CLIENT_TIMEOUT, max_connections=max(CONCURRENCY))
    # INFO commandstats is server-wide and the server is shared; writes counted here are
    # this benchmark's alone. The pool makes its connections lazily, so all are counted.
    client.connection_pool.connection_class = CountingConnection
    return client


def _gcra_source() -> str:
    return resources.files("gateway.ratelimit").joinpath("gcra.lua").read_text(encoding="utf-8")


Op = Callable[[int], Awaitable[int]]


def _ops(client: Redis, limiter: RateLimiter, prefix: str, concurrency: int) -> dict[str, Op]:
    """One call of each series by caller ``i``; each returns how many operations it made."""
    script = client.register_script(_gcra_source())
    script_args = [POLICY.interval_us, POLICY.burst_us, 1]

    async def limiter_op(i: int) -> int:
        await limiter.check(POLICY, f"c{i}")
        return 1

    async def script_op(i: int) -> int:
        await script(keys=[f"{prefix}script:c{i}"], args=script_args)
        return 1

    # redis-py's incr() sends INCRBY; the baseline is the plain INCR, hence execute_command
    # (which redis-py leaves untyped).
    async def incr_op(i: int) -> int:
        await client.execute_command("INCR", f"{prefix}incr:c{i}")  # type: ignore[no-untyped-call]
        return 1

    pipeline_keys = [f"{prefix}pipe:c{i}" for i in range(concurrency)]

    async def pipeline_op(i: int) -> int:
        pipe = client.pipeline(transaction=False)
        for key in pipeline_keys:
            pipe.execute_command("INCR", key)
        await pipe.execute()
        return len(pipeline_keys)

    return {"limiter": limiter_op, "script": script_op, "incr": incr_op, "pipeline": pipeline_op}


async def _drive(op: Op, callers: int, seconds: float) -> tuple[int, float, float]:
    """Run ``callers`` tasks calling ``op`` for ``seconds``: (operations, wall s, CPU s)."""
    deadline = time.perf_counter() + seconds
    done = [0] * callers

    async def caller(i: int) -> None:
        while time.perf_counter() < deadline:
            done[i] += await op(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    return sum(done), time.perf_counter() - wall, time.process_time() - cpu


_COUNTED = ("evalsha", "eval", "script|load", "incr", "time", "get", "set")


async def _server_counters(info_client: Redis) -> dict[str, float]:
    """Redis's own call counts and CPU: server-wide, so other clients' traffic shows too."""
    stats = await info_client.info("commandstats")
    cpu = await info_client.info("cpu")
    counters: dict[str, float] = {}
    for name in _COUNTED:
        entry = stats.get(f"cmdstat_{name}", {})
        counters[f"{name}_calls"] = float(entry.get("calls", 0))
        counters[f"{name}_usec"] = float(entry.get("usec", 0))
    counters["cpu_seconds"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return counters


async def _cell(op: Op, callers: int, info_client: Redis, seconds: float) -> dict[str, float | int]:
    before = await _server_counters(info_client)
    writes = CountingConnection.writes
    ops, wall, cpu = await _drive(op, callers, seconds)
    writes = CountingConnection.writes - writes
    after = await _server_counters(info_client)
    delta = {k: after[k] - before[k] for k in before}
    return {
        "operations": ops,
        "seconds": round(wall, 4),
        "per_second": round(ops / wall, 1),
        "client_round_trips": writes,
        "client_cpu_us_per_op": round(cpu / ops * 1e6, 2),
        "redis_cpu_us_per_op": round(delta["cpu_seconds"] / ops * 1e6, 2),
        **{k: int(v) if k.endswith("_calls") else v for k, v in delta.items() if v},
    }


def _summarise(series: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(rounds, key=lambda r: r["per_second"])
    ops = sum(r["operations"] for r in rounds)
    summary: dict[str, Any] = {
        "per_second": best["per_second"],
        "rounds_per_second": [r["per_second"] for r in rounds],
        "operations": ops,
        # Round trips are counted over every round: they should not vary with noise.
        "round_trips_per_op": round(sum(r["client_round_trips"] for r in rounds) / ops, 4),
        "client_cpu_us_per_op": best["client_cpu_us_per_op"],
        "redis_cpu_us_per_op": best["redis_cpu_us_per_op"],
    }
    calls = "evalsha_calls" if series in ("limiter", "script") else "incr_calls"
    served = sum(r.get(calls, 0) for r in rounds)
    summary["redis_calls_per_op"] = round(served / ops, 4)
    if served:
        usec = sum(r.get(calls.replace("_calls", "_usec"), 0) for r in rounds)
        summary["redis_us_per_call"] = round(usec / served, 2)
    if series in ("limiter", "script"):
        # Commands the script runs inside Redis: not round trips, but Redis's work.
        summary["inner_commands_per_op"] = {
            name: round(sum(r.get(f"{name}_calls", 0) for r in rounds) / ops, 3)
            for name in ("time", "get", "set")
        }
        summary["script_loads"] = sum(r.get("script|load_calls", 0) for r in rounds)
    return summary


async def _delete_keys(client: Redis, prefix: str) -> int:
    deleted = 0
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        deleted += await client.unlink(key)
    return deleted


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    # The limiter warns once when it loses Redis; here that is the point, not news.
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _local_fallback() -> dict[str, Any]:
    """Decisions per second without Redis: the limiter's fallback and LocalGcra alone."""
    unreachable = redis_client(f"redis://127.0.0.1:{_closed_port()}/0", timeout=0.1)
    # One failed probe makes the limiter degraded; an hour between probes keeps it there.
    limiter = RateLimiter(unreachable, registry=CollectorRegistry(), probe_interval=3600)
    with _quiet("gateway.ratelimit"):
        await limiter.check(POLICY, "warmup")
    if not limiter.degraded:
        raise RuntimeError("the limiter reached a Redis that should be unreachable")

    async def degraded_op(i: int) -> int:
        await limiter.check(POLICY, f"c{i}")
        return 1

    ops, wall, _ = await _drive(degraded_op, 1, LOCAL_SECONDS)
    await unreachable.aclose()
    local = LocalGcra()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < LOCAL_SECONDS / 2:
        for _ in range(1000):
            local.check(POLICY, "c0")
        count += 1000
    return {
        "limiter_degraded_per_second": round(ops / wall, 1),
        "local_gcra_per_second": round(count / elapsed, 1),
        "seconds": round(wall, 3),
    }


@contextlib.asynccontextmanager
async def _clients(prefix: str) -> AsyncIterator[tuple[Redis, Redis]]:
    client, info_client = _client(), Redis.from_url(REDIS_URL)
    try:
        await info_client.ping()
    except RedisError as exc:
        await client.aclose()
        await info_client.aclose()
        raise RuntimeError(
            f"no Redis at {REDIS_URL} ({exc}): start it with `bash deploy/local/stack.sh start`"
        ) from exc
    try:
        yield client, info_client
    finally:
        deleted = await _delete_keys(info_client, prefix)
        print(f"  deleted {deleted} benchmark keys", flush=True)
        await client.aclose()
        await info_client.aclose()


async def _ratelimit() -> dict[str, Any]:
    prefix = f"bench-micro:{os.getpid()}:"
    results: dict[str, Any] = {"concurrency": list(CONCURRENCY), "series": {}}
    async with _clients(prefix) as (client, info_client):
        registry = CollectorRegistry()
        limiter = RateLimiter(client, key_prefix=prefix + "rl:", registry=registry)
        ops = {n: _ops(client, limiter, prefix, n) for n in CONCURRENCY}
        top = max(CONCURRENCY)
        for series in SERIES:
            # Opens every connection and loads the script before anything is timed.
            await _drive(ops[top][series], 1 if series == "pipeline" else top, WARMUP_SECONDS)
        cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for round_ in range(ROUNDS):
            for n in CONCURRENCY:
                for series in SERIES:
                    # A pipeline of n commands stands for n callers: one caller sends it.
                    callers = 1 if series == "pipeline" else n
                    cell = await _cell(ops[n][series], callers, info_client, CELL_SECONDS)
                    cells.setdefault((series, n), []).append(cell)
            print(f"  round {round_ + 1}/{ROUNDS} done", flush=True)
        # The limiter's own metrics say who decided: every decision must have been Redis's.
        errors = registry.get_sample_value("gateway_ratelimit_redis_errors_total") or 0
        if errors:
            raise RuntimeError(f"Redis failed {errors:.0f} limiter calls; the figures are mixed")
        results["redis_version"] = (await info_client.info("server"))["redis_version"]
    for series in SERIES:
        results["series"][series] = {
            str(n): _summarise(series, cells[(series, n)]) for n in CONCURRENCY
        }
    results["ratios"] = {
        str(n): {
            other: round(
                results["series"]["limiter"][str(n)]["per_second"]
                / results["series"][other][str(n)]["per_second"],
                3,
            )
            for other in ("incr", "pipeline", "script")
        }
        for n in CONCURRENCY
    }
    results["local_fallback"] = await _local_fallback()
    return results


_LABELS = {
    "limiter": "RateLimiter.check",
    "script": "GCRA script alone",
    "incr": "INCR",
    "pipeline": "INCR pipeline of n",
}


def _plot_ratelimit(results: dict[str, Any]) -> Path:
    # A bare Figure renders with Agg and leaves pyplot's global state alone.
    fig = Figure(figsize=(13, 5))
    rates, cpu = fig.subplots(1, 2, width_ratios=(3, 2))
    width = 0.8 / len(SERIES)
    for k, series in enumerate(SERIES):
        xs = [i + (k - (len(SERIES) - 1) / 2) * width for i in range(len(CONCURRENCY))]
        values = [results["series"][series][str(n)]["per_second"] for n in CONCURRENCY]
        rates.bar(xs, values, width, label=_LABELS[series])
        if series == "limiter":
            for x, n, value in zip(xs, CONCURRENCY, values, strict=True):
                ratio = results["ratios"][str(n)]["incr"]
                rates.annotate(
                    f"{ratio:.2f}x INCR",
                    (x, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    rotation=90,
                    xytext=(0, 3),
                    textcoords="offset points",
                )
    degraded = results["local_fallback"]["limiter_degraded_per_second"]
    rates.bar([len(CONCURRENCY)], [degraded], width * 2, color="grey", label="fallback, no Redis")
    rates.set_xticks(
        range(len(CONCURRENCY) + 1),
        [f"{n} caller{'s' * (n > 1)}" for n in CONCURRENCY] + ["fallback"],
    )
    rates.set_yscale("log")
    rates.set_ylabel("operations per second (log)")
    rates.set_title("Rate-limit decisions vs INCR on the same client")
    rates.legend(fontsize=8)
    top = str(max(CONCURRENCY))
    xs = list(range(len(SERIES)))
    client = [results["series"][s][top]["client_cpu_us_per_op"] for s in SERIES]
    server = [results["series"][s][top]["redis_cpu_us_per_op"] for s in SERIES]
    cpu.bar([x - 0.2 for x in xs], client, 0.4, label="benchmark process (redis-py, uvloop)")
    cpu.bar([x + 0.2 for x in xs], server, 0.4, label="redis-server")
    round_trips = [results["series"][s][top]["round_trips_per_op"] for s in SERIES]
    cpu.set_xticks(
        xs,
        [
            f"{_LABELS[s]}\n{rt:.2f} round trips/op"
            for s, rt in zip(SERIES, round_trips, strict=True)
        ],
        fontsize=7,
    )
    cpu.set_ylabel("CPU µs per operation")
    cpu.set_title(f"Where the time goes, {top} callers")
    cpu.legend(fontsize=8)
    fig.tight_layout()
    path = plot_path("micro-ratelimit")
    fig.savefig(path, dpi=120)
    return path


def _plot_breaker(results: dict[str, Any]) -> Path:
    entries = list(results.values())
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ys = range(len(entries))
    values = [e["ns_per_call"] / 1000 for e in entries]
    ax.barh(ys, values, color=["grey"] + ["tab:blue"] * (len(entries) - 1))
    for y, entry, value in zip(ys, entries, values, strict=True):
        ax.annotate(
            f"{value:.2f} µs (+{entry['overhead_ns'] / 1000:.2f})",
            (value, y),
            va="center",
            fontsize=8,
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_yticks(ys, [e["label"] for e in entries], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per call, best of repeats (overhead over the bare await)")
    ax.set_title("Resilience guards around an async no-op")
    ax.set_xlim(0, max(values) * 1.35)
    fig.tight_layout()
    path = plot_path("micro-breaker")
    fig.savefig(path, dpi=120)
    return path


def _report(ratelimit: dict[str, Any], breakers: dict[str, Any]) -> None:
    for n in CONCURRENCY:
        row = {s: ratelimit["series"][s][str(n)] for s in SERIES}
        print(
            f"  c={n:<3} limiter {row['limiter']['per_second']:>9.0f}/s "
            f"({row['limiter']['round_trips_per_op']:.2f} rt, "
            f"{row['limiter']['redis_calls_per_op']:.2f} evalsha per decision)  "
            f"script {row['script']['per_second']:>9.0f}/s  "
            f"INCR {row['incr']['per_second']:>9.0f}/s  "
            f"pipeline {row['pipeline']['per_second']:>9.0f}/s  "
            f"limiter/INCR {ratelimit['ratios'][str(n)]['incr']:.2f}",
            flush=True,
        )
    local = ratelimit["local_fallback"]
    print(
        f"  fallback: limiter {local['limiter_degraded_per_second']:.0f}/s, "
        f"LocalGcra {local['local_gcra_per_second']:.0f}/s",
        flush=True,
    )
    base = breakers["direct"]["ns_per_call"]
    print(f"  breaker overhead over a {base:.0f} ns await:", flush=True)
    for entry in breakers.values():
        print(f"    {entry['label']:48} +{entry['overhead_ns']:7.0f} ns", flush=True)


async def _run() -> dict[str, Any]:
    print("  rate limiter vs INCR", flush=True)
    ratelimit = await _ratelimit()
    print("  resilience guards", flush=True)
    breakers = await micro_breaker.measure()
    print("  HTTP limits in the server protocol", flush=True)
    limits = await micro_limits.measure()
    print("  a saga step's statement: SQLAlchemy's session against Sql on asyncpg", flush=True)
    sql = await micro_sql.measure()
    return {"ratelimit": ratelimit, "breaker": breakers, "limits": limits, "sql": sql}


def main() -> None:
    """Measure, save results/micro.json and draw the two plots."""
    started = time.monotonic()
    # The gateway serves on uvloop; the limiter's cost is measured on the same loop.
    results = uvloop.run(_run())
    _report(results["ratelimit"], results["breaker"])
    settings = {
        "redis_url": REDIS_URL,
        "event_loop": f"uvloop {metadata.version('uvloop')}",
        "rounds": ROUNDS,
        "cell_seconds": CELL_SECONDS,
        "client_timeout_seconds": CLIENT_TIMEOUT,
        "policy": POLICY.model_dump(),
        "breaker_repeats": micro_breaker.REPEATS,
        "breaker_min_run_seconds": micro_breaker.MIN_RUN_SECONDS,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    path = save("micro", {"settings": settings, **results})
    plots = [_plot_ratelimit(results["ratelimit"]), _plot_breaker(results["breaker"])]
    print(f"  wrote {path} and {', '.join(str(p) for p in plots)}", flush=True)
