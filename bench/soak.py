"""Soak: the whole system under steady load for a long time, watched for what creeps.

Orders and public catalogue reads go through the gateway at a constant open-loop rate (one
k6 run for the whole duration, as bench/pipeline_steps.py drives orders): by default 70 % of
the saturated throughput that the last ``make bench`` measured (``saturated_sagas_per_s`` in
results/pipeline.json; DEFAULT_SATURATED_SAGAS_PER_S without one), as many reads per second
as orders. Environment: DURATION (``90s``, ``10m``, ``1h``; 30 minutes by default), RATE
(orders per second), READ_RATE (reads per second).

Watched throughout: per process RSS, open descriptors, database connections and event-loop
lag (bench/soak_probe.py); for the system, requests that failed other than with a 429,
consumer lag, outbox backlog, pending orders and the p99 time to terminal of each interval
(bench/pipeline_probe.py's probe, the orders' own timestamps). Once the load stops, the run
waits for lag, backlog and pending orders to reach zero (DRAIN_SECONDS at most), runs
``mercato check`` and writes results/soak.json and results/soak.png.

Verdict (CHECKS): no request failed other than with a 429, every process still running,
every order terminal, the invariants hold, lag and outbox drained to zero, and every
process's RSS grew by less than RSS_GROWTH_LIMIT from the end of the warm-up (the first 20 %
of the run or its first 2 minutes, whichever is shorter) to the end of the load: the median
of the first three samples after the warm-up against the median of the last three. The mail
catcher keeps every message in memory by design (a test double), so its growth is reported
and not judged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import soak_plots
from bench.common import RESULTS_DIR, percentile, save
from bench.pipeline import checked
from bench.pipeline_probe import Finished, Probe, orders
from bench.pipeline_probe import Sample as SystemSample
from bench.pipeline_steps import idle, k6
from bench.pipeline_system import SKUS, Bench, running_system
from bench.soak_probe import Endpoint, ResourceProbe, ResourceSample
from bench.soak_probe import as_json as resources_json
from tests import infra

DEFAULT_DURATION_S = 30 * 60
# Without a pipeline result: about what the pipeline saturates at on a two-core machine.
DEFAULT_SATURATED_SAGAS_PER_S = 20.0
RATE_SHARE = 0.7
READS_PER_ORDER = 1.0
READ_PATH = f"/api/v1/products/{SKUS[0]}"
WARMUP_SHARE = 0.2
WARMUP_MAX_S = 120.0
RSS_GROWTH_LIMIT = 0.10
RSS_EXEMPT = {"mail-catcher": "keeps every message it receives in memory (a test double)"}
DRAIN_SECONDS = 120.0
BEHIND_SECONDS = 5.0  # orders pending at the end of the load, in seconds of arrivals
SYSTEM_PROBE_SECONDS = 1.0
# The system's series over time, in the JSON's "system" (the processes' are in "processes").
SYSTEM_SERIES = (
    "requests",
    "failed_not_429",
    "rate_limited",
    "consumer_lag",
    "outbox_backlog",
    "pending",
    "placed",
    "p99_time_to_terminal_ms",
)
CHECKS = (
    "no_failed_requests",
    "processes_running",
    "every_order_terminal",
    "invariants",
    "drained",
    "rss_growth",
)


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m`` or ``1h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 90s, 10m or 1h)")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def saturated_rate(path: Path = RESULTS_DIR / "pipeline.json") -> tuple[float, str]:
    """The saturated sagas/s of the last pipeline benchmark, and where the figure came from."""
    try:
        rate = float(json.loads(path.read_text())["saturated_sagas_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_SATURATED_SAGAS_PER_S, "default (no pipeline result)"
    return rate, f"{path.name} ({rate:g} sagas/s)"


def sample_interval(duration: float) -> float:
    """Seconds between process samples: about ninety over the run, 2 to 20 s apart."""
    return min(20.0, max(2.0, duration / 90))


def warmup_seconds(duration: float) -> float:
    return min(WARMUP_SHARE * duration, WARMUP_MAX_S)


def endpoints(bench: Bench) -> dict[str, Endpoint]:
    """Each process's /metrics, or for the two test doubles a path only timed."""
    port = bench.system.port
    found = {name: Endpoint(f"http://127.0.0.1:{port[name]}/metrics") for name in port}
    found["gateway"] = Endpoint(f"{bench.system.gateway_url}/metrics")
    found["payment-sandbox"] = Endpoint(f"{bench.system.sandbox_url}/healthz", outside=True)
    found["mail-catcher"] = Endpoint(f"{bench.system.mail_url}/healthz", outside=True)
    return {name: found[name] for name in bench.pids()}


async def drain(probe: Probe, within: float) -> float | None:
    """Seconds until a fresh sample shows no lag, backlog or pending order; None past ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        sample = probe.latest
        if sample is not None and sample.t > time.time() - 2 * SYSTEM_PROBE_SECONDS:
            if idle(sample):
                return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    return None


async def soak(
    *, duration: float, rate: float, read_rate: float, name: str = "soak"
) -> dict[str, Any]:
    """Run the system under the load for ``duration`` seconds; what was measured, unjudged."""
    interval = sample_interval(duration)
    started = time.monotonic()
    async with running_system(name) as bench:
        print(f"soak: system up in {time.monotonic() - started:.0f} s", flush=True)
        pids = bench.pids()
        probe = Probe(
            databases=bench.system.databases,
            kafka=infra.KAFKA,
            prefix=bench.system.prefix,
            pids=pids,
            interval=SYSTEM_PROBE_SECONDS,
        )
        resources = ResourceProbe(
            pids=pids,
            endpoints=endpoints(bench),
            databases=bench.system.databases,
            admin_url=infra.database_url("postgres", "postgresql"),
            interval=interval,
        )
        await probe.start()
        await resources.start()
        origin = time.time()
        try:
            print(
                f"soak: {rate:g} orders/s and {read_rate:g} reads/s for {duration:g} s",
                flush=True,
            )
            load = await k6(
                bench,
                subject="soak",
                env={
                    "MERCATO_SCENARIOS": "browse,orders",
                    "DURATION": f"{math.ceil(duration)}s",
                    "ORDER_RATE": f"{rate:.2f}",
                    "ORDER_VUS": str(math.ceil(rate) + 20),
                    "ORDER_MAX_VUS": str(math.ceil(rate * 10) + 100),
                    "BROWSE_RATE": f"{read_rate:.2f}",
                    "BROWSE_PATH": READ_PATH,
                    "BROWSE_ANONYMOUS": "true",
                    "BROWSE_VUS": str(math.ceil(read_rate) + 10),
                    "BROWSE_MAX_VUS": str(math.ceil(read_rate * 10) + 50),
                },
            )
            load_end = time.time()
            drained_in = await drain(probe, DRAIN_SECONDS)
            resources.samples.append(await resources.sample())
            exited = sorted(
                name
                for name, process in bench.system.processes.items()
                if process.proc is None or process.proc.poll() is not None
            )
            finished = await orders(bench.system.databases["order"])
            report = await checked(bench)
        finally:
            await resources.stop()
            await probe.stop()
    if not report.ok:
        print(f"mercato check FAILED: {report.violations[:10]}", flush=True)
    return {
        "duration_s": duration,
        "rate": {"orders_per_s": rate, "reads_per_s": read_rate, "read_path": READ_PATH},
        "interval_s": interval,
        "warmup_s": warmup_seconds(duration),
        "load_end_s": round(load_end - origin, 2),
        "drained_in_s": drained_in,
        "drain_deadline_s": DRAIN_SECONDS,
        "k6": load,
        "exited": exited,
        "invariants": {
            "ok": report.ok,
            "counts": dict(report.counts),
            "violations": [str(v) for v in report.violations[:20]],
        },
        "orders": _outcomes(finished),
        "series": _series(origin, interval, probe.samples, resources.samples, finished),
        "samples": [resources_json(s, origin) for s in resources.samples],
    }


def _outcomes(finished: list[Finished]) -> dict[str, Any]:
    done = [(o.ended - o.created) * 1000 for o in finished if o.ended is not None]
    return {
        "placed": len(finished),
        **{s.lower(): sum(o.status == s for o in finished) for s in ("CONFIRMED", "CANCELLED")},
        "not_terminal": sum(o.status == "PENDING" for o in finished),
        "time_to_terminal_ms": {
            q: round(percentile(done, n), 1) for q, n in (("p50", 50), ("p99", 99))
        },
    }


def _failed(statuses: dict[str, int]) -> int:
    """Requests answered with an error other than the rate limiter's 429."""
    return sum(n for status, n in statuses.items() if int(status) >= 400 and status != "429")


def _series(
    origin: float,
    interval: float,
    system: list[SystemSample],
    resources: list[ResourceSample],
    finished: list[Finished],
) -> dict[str, Any]:
    """Per process and for the system, one value per resource sample's interval."""
    t: list[float] = []
    processes: dict[str, dict[str, list[Any]]] = {}
    by_database: dict[str, list[int]] = {}
    # Which consumer falls behind, when the total grows.
    lag_by_group: dict[str, list[int | None]] = {}
    out: dict[str, list[Any]] = {key: [] for key in SYSTEM_SERIES}
    seconds: list[float] = []
    for before, sample in itertools.pairwise(resources):
        t.append(round(sample.t - origin, 1))
        # Under load a sample can come late: rates divide by the span really covered.
        seconds.append(round(sample.t - before.t, 2))
        for name, p in sample.processes.items():
            series = processes.setdefault(
                name, {"rss_mib": [], "fds": [], "db_connections": [], "loop_lag_ms": []}
            )
            series["rss_mib"].append(None if p.rss_mib is None else round(p.rss_mib, 1))
            series["fds"].append(p.fds)
            series["db_connections"].append(p.db_connections)
            series["loop_lag_ms"].append(p.loop_lag_ms)
        for service, count in sample.db_by_database.items():
            by_database.setdefault(service, []).append(count)
        now, then = sample.gateway_statuses, before.gateway_statuses
        delta = {s: n - then.get(s, 0) for s, n in now.items()}
        out["requests"].append(sum(delta.values()))
        out["failed_not_429"].append(_failed(delta))
        out["rate_limited"].append(delta.get("429", 0))
        inside = [s for s in system if before.t < s.t <= sample.t]
        out["consumer_lag"].append(max((sum(s.lag.values()) for s in inside), default=None))
        for group in {g for s in inside for g in s.lag}:
            lag_by_group.setdefault(group, [None] * (len(t) - 1)).append(
                max((s.lag.get(group, 0) for s in inside), default=None)
            )
        for lags in lag_by_group.values():
            lags.extend([None] * (len(t) - len(lags)))
        out["outbox_backlog"].append(max((sum(s.outbox.values()) for s in inside), default=None))
        out["pending"].append(max((s.pending for s in inside), default=None))
        placed = [o for o in finished if before.t < o.created <= sample.t]
        done = [(o.ended - o.created) * 1000 for o in placed if o.ended is not None]
        out["placed"].append(len(placed))
        out["p99_time_to_terminal_ms"].append(round(percentile(done, 99), 1) if done else None)
    return {
        "t": t,
        "seconds": seconds,
        "processes": processes,
        "db_connections_by_database": by_database,
        "consumer_lag_by_group": lag_by_group,
        "system": out,
    }


def rss_growth(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each process's RSS after the warm-up, at the end of the load, and the growth between."""
    series = result["series"]
    t = series["t"]
    steady = [i for i, at in enumerate(t) if result["warmup_s"] <= at <= result["load_end_s"]]
    growth: dict[str, dict[str, Any]] = {}
    for name, values in series["processes"].items():
        rss = [values["rss_mib"][i] for i in steady if values["rss_mib"][i] is not None]
        if len(rss) < 2:
            growth[name] = {"after_warmup_mib": None, "end_mib": None, "growth": None}
            continue
        first = statistics.median(rss[:3])
        last = statistics.median(rss[-3:])
        growth[name] = {
            "after_warmup_mib": round(first, 1),
            "end_mib": round(last, 1),
            "growth": round(last / first - 1, 4),
            **({"exempt": RSS_EXEMPT[name]} if name in RSS_EXEMPT else {}),
        }
    return growth


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Each pass criterion with what it saw; ``ok`` when all hold."""
    load = result["k6"]
    limited = load["rate_limited"] + load["browse_rate_limited"]
    client = load["failed"] - limited
    server = sum(result["series"]["system"]["failed_not_429"])
    growth = rss_growth(result)
    judged = {n: g for n, g in growth.items() if "exempt" not in g}
    too_much = {n: g["growth"] for n, g in judged.items() if (g["growth"] or 0) >= RSS_GROWTH_LIMIT}
    unmeasured = sorted(n for n, g in judged.items() if g["growth"] is None)
    biggest = max(judged.items(), key=lambda kv: kv[1]["growth"] or 0.0, default=None)
    orders = result["orders"]
    checks = {
        "no_failed_requests": (
            client == 0 and server == 0,
            f"{client} failed at k6, {server} answered with an error by the gateway "
            f"(429s left out: {limited}); of {load['requests']} requests",
        ),
        "processes_running": (
            not result["exited"],
            f"exited: {', '.join(result['exited'])}" if result["exited"] else "all running",
        ),
        "every_order_terminal": (
            orders["not_terminal"] == 0 and orders["placed"] > 0,
            f"{orders['placed']} placed, {orders['confirmed']} confirmed, "
            f"{orders['cancelled']} cancelled, {orders['not_terminal']} not terminal",
        ),
        "invariants": (
            result["invariants"]["ok"],
            "mercato check green"
            if result["invariants"]["ok"]
            else f"violations: {result['invariants']['violations'][:3]}",
        ),
        "drained": (
            result["drained_in_s"] is not None,
            f"lag, outbox and pending at 0 {result['drained_in_s']} s after the load"
            if result["drained_in_s"] is not None
            else f"not drained within {result['drain_deadline_s']:g} s",
        ),
        "rss_growth": (
            not too_much and not unmeasured,
            (
                f"over {RSS_GROWTH_LIMIT:.0%}: {too_much}"
                if too_much
                else f"too few samples after the warm-up: {unmeasured}"
                if unmeasured
                else f"largest {biggest[0]} {biggest[1]['growth']:+.1%}"
                if biggest
                else "no process"
            ),
        ),
    }
    return {
        "ok": all(ok for ok, _ in checks.values()),
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
        "warnings": _warnings(result),
        "rss_growth": growth,
        "rss_growth_limit": RSS_GROWTH_LIMIT,
    }


def _warnings(result: dict[str, Any]) -> list[str]:
    """What a passing run can still hide: a system that fell behind its load (not judged).

    A short run at a rate the machine cannot carry passes once the backlog drains within the
    deadline; over the full duration the backlog would not have.
    """
    series = result["series"]
    under_load = [i for i, at in enumerate(series["t"]) if at <= result["load_end_s"]]
    pending = series["system"]["pending"][under_load[-1]] if under_load else None
    arrivals = BEHIND_SECONDS * result["rate"]["orders_per_s"]
    if pending is None or pending <= max(10, arrivals):
        return []
    return [
        f"the system fell behind the load: {pending} orders pending when it stopped (more "
        f"than {BEHIND_SECONDS:g} s of arrivals), p99 time to terminal "
        f"{result['orders']['time_to_terminal_ms']['p99']} ms; the rate is more than this "
        "machine carries now"
    ]


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader looks for first: peaks over the run, per process and overall."""
    series = result["series"]
    system = series["system"]

    def peak(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    return {
        "p99_time_to_terminal_ms": result["orders"]["time_to_terminal_ms"]["p99"],
        "worst_interval_p99_ms": peak(system["p99_time_to_terminal_ms"]),
        "max_consumer_lag": peak(system["consumer_lag"]),
        "max_outbox_backlog": peak(system["outbox_backlog"]),
        "processes": {
            name: {
                "max_rss_mib": peak(values["rss_mib"]),
                "fds": [values["fds"][0], values["fds"][-1]] if values["fds"] else None,
                "max_db_connections": peak(values["db_connections"]),
                "max_loop_lag_ms": peak(values["loop_lag_ms"]),
            }
            for name, values in series["processes"].items()
        },
    }


def report(result: dict[str, Any]) -> str:
    """The verdict and the main figures, for the console."""
    lines = [
        f"soak {result['duration_s']:g} s at {result['rate']['orders_per_s']:g} orders/s "
        f"and {result['rate']['reads_per_s']:g} reads/s: "
        f"{'PASS' if result['verdict']['ok'] else 'FAIL'}"
    ]
    for name, check in result["verdict"]["checks"].items():
        lines.append(f"  {'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    lines.extend(f"  warning: {warning}" for warning in result["verdict"]["warnings"])
    figures = result["summary"]
    load = result["k6"]
    lines.append(
        f"  k6: {load['requests']} requests, {load['dropped']} arrivals dropped (no VU free: "
        f"all waiting on answers), POST p99 {load['post_ms']['p99']} ms"
    )
    lines.append(
        f"  p99 time to terminal {figures['p99_time_to_terminal_ms']} ms (worst interval "
        f"{figures['worst_interval_p99_ms']} ms), max lag {figures['max_consumer_lag']}, "
        f"max outbox {figures['max_outbox_backlog']}"
    )
    growth = result["verdict"]["rss_growth"]
    for name, p in figures["processes"].items():
        g = growth.get(name, {}).get("growth")
        lines.append(
            f"  {name:>20}: RSS {p['max_rss_mib']} MiB max, "
            f"{'-' if g is None else f'{g:+.1%}'} after warm-up; fds {p['fds']}; "
            f"DB conns max {p['max_db_connections']}; loop lag max {p['max_loop_lag_ms']} ms"
        )
    return "\n".join(lines)


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """The result with its verdict and summary."""
    result["verdict"] = verdict(result)
    result["summary"] = summary(result)
    return result


def write(result: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """soak.json and soak.png into ``directory``."""
    soak_plots.draw(result, directory)
    return save("soak", result, tools=("k6",), directory=directory)


def settings(environ: dict[str, str]) -> dict[str, Any]:
    """Duration and rates from DURATION, RATE and READ_RATE, the defaults otherwise."""
    duration = parse_duration(environ.get("DURATION") or f"{DEFAULT_DURATION_S}s")
    if environ.get("RATE"):
        rate, source = float(environ["RATE"]), "RATE"
    else:
        saturated, origin = saturated_rate()
        rate, source = round(RATE_SHARE * saturated, 1), f"{RATE_SHARE:.0%} of {origin}"
    read_rate = float(environ.get("READ_RATE") or READS_PER_ORDER * rate)
    return {"duration": duration, "rate": rate, "read_rate": read_rate, "rate_source": source}


def main() -> int:
    """Run the soak as DURATION, RATE and READ_RATE say; 1 if it failed."""
    chosen = settings(dict(os.environ))
    source = chosen.pop("rate_source")
    result = asyncio.run(soak(**chosen))
    result["rate"]["source"] = source
    judge(result)
    path = write(result)
    print(report(result))
    print(f"-> {path}")
    return 0 if result["verdict"]["ok"] else 1
