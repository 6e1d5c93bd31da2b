"""The pipeline benchmark's unit of load: k6 placing orders, and what a span of the run measured.

A step places orders at a fixed open-loop rate for a few seconds, then waits until the system
is idle again. What a span of the run cost (database commits, CPU per process) is taken from
the probe's samples over it and divided by the sagas that became final inside the same span.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import BENCH_DIR, percentile, tool
from bench.pipeline_probe import Finished, Probe, Sample, orders
from bench.pipeline_system import SKUS, Bench

WARMUP_SECONDS = 3  # left out of a step's completion rate: the pipeline fills first
DRAIN_SECONDS = 30
K6_SCRIPT = BENCH_DIR / "k6" / "mercato.js"
POST_NAME = "POST /api/v1/orders"  # the k6 script's tag for order placements


def is_mercato(process: str) -> bool:
    """Whether the CPU aim counts a process: every process the system runs but Postgres.

    The gateway, the apis and the workers (replicas too), and the stand-ins for third parties
    that run with it (the card processor sandbox, the mail catcher).
    """
    return process != "postgres"


async def k6(bench: Bench, *, subject: str, env: dict[str, str]) -> dict[str, Any]:
    """Run the k6 script's orders scenario for ``subject`` with ``env``; its summary figures."""
    bench.check_running()
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        process = await asyncio.create_subprocess_exec(
            tool("k6"),
            *("run", "--quiet", "--no-color", "--no-usage-report"),
            *("--summary-export", str(summary), str(K6_SCRIPT)),
            env={
                **os.environ,
                "MERCATO_URL": bench.system.gateway_url,
                "MERCATO_TOKEN": bench.token(subject),
                "MERCATO_SCENARIOS": "orders",
                # Followed server-side instead: polling would add load the saga does not need.
                "ORDER_FOLLOW": "false",
                "ORDER_SKUS": ",".join(SKUS),
                "BROWSE_PATH": "/api/v1/products/SOCKS",
                **env,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        # 99: a threshold was crossed, which saturation steps are meant to do.
        if process.returncode not in (0, 99) or not summary.exists():
            raise RuntimeError(f"k6 failed ({process.returncode}):\n{output.decode()[-3000:]}")
        metrics = json.loads(summary.read_text())["metrics"]
    duration = metrics[f"http_req_duration{{name:{POST_NAME}}}"]
    requests = int(metrics["http_reqs"]["count"])
    failed_share = float(metrics["http_req_failed"]["value"])
    return {
        "placed": int(metrics["iterations"]["count"]),
        "dropped": int(metrics.get("dropped_iterations", {}).get("count", 0)),
        "requests": requests,
        # Every request is a sample of the failed rate, so share times count is exact.
        "failed": round(failed_share * requests),
        "failed_share": failed_share,
        "rejected": int(metrics.get("order_posts_rejected", {}).get("count", 0)),
        "rate_limited": int(metrics.get("order_posts_rate_limited", {}).get("count", 0)),
        "shed": int(metrics.get("order_posts_shed", {}).get("count", 0)),
        "browse_rate_limited": int(metrics.get("browse_rate_limited", {}).get("count", 0)),
        "post_ms": {
            "p50": round(duration["med"], 1),
            "p95": round(duration["p(95)"], 1),
            "p99": round(duration["p(99)"], 1),
        },
    }


def latencies(finished: list[Finished], subject: str) -> dict[str, Any]:
    """Orders of ``subject``: how many, how they ended, time to terminal percentiles."""
    mine = [o for o in finished if o.customer == subject]
    done = [(o.ended - o.created) * 1000 for o in mine if o.ended is not None]
    return {
        "orders": len(mine),
        "unfinished": len(mine) - len(done),
        "confirmed": sum(o.status == "CONFIRMED" for o in mine),
        "time_to_terminal_ms": {
            "p50": round(percentile(done, 50), 1),
            "p95": round(percentile(done, 95), 1),
            "p99": round(percentile(done, 99), 1),
            "max": round(max(done, default=float("nan")), 1),
        },
    }


def idle(sample: Sample) -> bool:
    """Nothing pending, lagging or unpublished in this sample."""
    return not sample.pending and not any(sample.lag.values()) and not any(sample.outbox.values())


async def drain(bench: Bench, probe: Probe, within: float) -> float:
    """Wait until nothing is pending, lagging or unpublished, and orders pass the gateway."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        await asyncio.sleep(0.5)
        sample = probe.latest
        if sample is not None and sample.t > time.time() - 1.5 and idle(sample):
            break
    # An overloaded step can leave the gateway's breaker to order-api open: the next step
    # must not start while it still sheds load. Its half-open probes are these requests.
    headers = {"Authorization": f"Bearer {bench.token('bench-probe')}"}
    async with httpx.AsyncClient(base_url=bench.system.gateway_url, timeout=5) as client:
        healthy = 0
        while healthy < 3 and time.monotonic() - started < within:
            response = await client.get("/api/v1/orders", params={"limit": 1}, headers=headers)
            healthy = healthy + 1 if response.status_code == 200 else 0
            await asyncio.sleep(0.2)
    return round(time.monotonic() - started, 1)


def costs(samples: list[Sample], finished: list[Finished]) -> dict[str, Any]:
    """Commits and CPU per saga over the span of ``samples``, by the sagas ended inside it.

    Commits are the sum over the system's databases of pg_stat_database's xact_commit from
    the first sample to the last (the probe's own queries taken out); sagas are the orders
    whose terminal entry falls between the two samples' times. Each sample's CPU shares cover
    the interval since the one before, so the first sample's are left out.
    """
    if len(samples) < 2:
        return {
            "seconds": 0.0,
            "sagas": 0,
            "db_commits": None,
            "db_commits_by_database": {},
            "db_commits_per_s": None,
            "db_commits_per_saga": None,
            "cpu_cores": {},
            "cpu_ms_per_saga": {},
            "cpu_ms_per_saga_total": None,
            "cpu_ms_per_saga_mercato": None,
            "machine_busy": 0.0,
        }
    first, last = samples[0], samples[-1]
    seconds = last.t - first.t
    sagas = sum(1 for o in finished if o.ended is not None and first.t < o.ended <= last.t)
    commits = {d: last.commits[d] - first.commits.get(d, last.commits[d]) for d in last.commits}
    total = sum(commits.values())
    # Weighted by the interval each sample covers: under load the probe itself runs late.
    shares: dict[str, float] = {}
    busy = 0.0
    for before, sample in itertools.pairwise(samples):
        weight = (sample.t - before.t) / seconds if seconds else 0.0
        busy += sample.machine_busy * weight
        for process, share in sample.cpu.items():
            shares[process] = shares.get(process, 0.0) + share * weight
    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    per_saga = {p: round(1000 * v * seconds / sagas, 2) for p, v in ordered} if sagas else {}
    return {
        "seconds": round(seconds, 2),
        "sagas": sagas,
        "db_commits": total,
        "db_commits_by_database": commits,
        "db_commits_per_s": round(total / seconds, 1) if seconds else None,
        "db_commits_per_saga": round(total / sagas, 2) if sagas else None,
        # Share of one core per process, and what that costs per saga: the machine-independent
        # view of where the time goes.
        "cpu_cores": {p: round(v, 3) for p, v in ordered},
        "cpu_ms_per_saga": per_saga,
        "cpu_ms_per_saga_total": round(sum(per_saga.values()), 1) if sagas else None,
        "cpu_ms_per_saga_mercato": (
            round(sum(v for p, v in per_saga.items() if is_mercato(p)), 1) if sagas else None
        ),
        "machine_busy": round(busy, 3),
    }


async def step(
    bench: Bench, probe: Probe, *, name: str, rate: float, seconds: int, replicas: int = 1
) -> dict[str, Any]:
    """One step at a fixed arrival rate, drained afterwards; what it measured."""
    subject = f"bench-{name}"
    started = time.time()
    load = await k6(
        bench,
        subject=subject,
        env={
            "ORDER_RATE": f"{rate:.2f}",
            "DURATION": f"{seconds}s",
            # Enough VUs from the start for POSTs that slow down near saturation: k6 starting
            # more mid-step would itself drop arrivals.
            "ORDER_VUS": str(math.ceil(rate) + 20),
            "ORDER_MAX_VUS": str(math.ceil(rate * 10) + 100),
        },
    )
    ended = time.time()
    pending_at_end = probe.latest.pending if probe.latest is not None else 0
    drained_in = await drain(bench, probe, DRAIN_SECONDS)
    finished = await orders(bench.system.databases["order"])
    # The load's own span, from the orders it placed: k6 takes a moment to start, and that
    # moment must not count as time the system had to complete orders in.
    placed = sorted(o.created for o in finished if o.customer == subject)
    first, last = (placed[0], placed[-1]) if len(placed) >= 2 else (started, ended)
    window = (first + WARMUP_SECONDS, last)
    completed = sum(
        1 for o in finished if o.ended is not None and window[0] <= o.ended <= window[1]
    )
    completed_per_s = completed / max(1.0, window[1] - window[0])
    in_step = [s for s in probe.samples if first <= s.t <= last]
    steady = [s for s in in_step if s.t >= window[0]] or in_step
    record = {
        "name": name,
        "replicas": replicas,
        "rate": round(rate, 2),
        "start": round(first, 3),
        "end": round(last, 3),
        "offered_per_s": round(len(placed) / max(1.0, last - first), 1),
        "completed_per_s": round(completed_per_s, 1),
        **latencies(finished, subject),
        "k6": load,
        "pending_at_end": pending_at_end,
        "drained_in_s": drained_in,
        "max_lag": peaks(in_step, "lag"),
        "max_outbox": peaks(in_step, "outbox"),
        **costs(steady, finished),
    }
    record["saturated"] = saturation(record, seconds)
    return record


def peaks(samples: list[Sample], field: str) -> dict[str, int]:
    """The highest value of each series of a per-service sample field."""
    found: dict[str, int] = {}
    for sample in samples:
        for key, value in getattr(sample, field).items():
            found[key] = max(found.get(key, 0), value)
    return found


def saturation(step: dict[str, Any], seconds: int) -> list[str]:
    """Why a step counts as saturated (empty: the system kept up)."""
    why = []
    offered, rate = step["offered_per_s"], step["rate"]
    if step["completed_per_s"] < 0.9 * offered:
        why.append("completed/s fell below 90 % of offered/s")
    # Unsaturated, orders in flight are the arrival rate times a time to terminal well under a
    # second; a second's worth of arrivals left pending means they queue.
    if step["pending_at_end"] > max(10, rate):
        why.append("orders pending at the end exceeded one second of arrivals")
    if step["k6"]["dropped"] > 0.01 * rate * seconds:
        why.append("the gateway could not take the orders on schedule (k6 dropped them)")
    if step["k6"]["failed_share"] > 0.01:
        why.append("more than 1 % of POSTs failed")
    return why


def summary(step: dict[str, Any]) -> str:
    """One line per step for the console."""
    t = step["time_to_terminal_ms"]
    flag = " SATURATED" if step["saturated"] else ""
    cpu = step["cpu_ms_per_saga_total"]
    return (
        f"  {step['name']:>6}: offered {step['offered_per_s']:6.1f}/s, completed "
        f"{step['completed_per_s']:6.1f}/s, p50/p95/p99 {t['p50']:.0f}/{t['p95']:.0f}/"
        f"{t['p99']:.0f} ms, pending at end {step['pending_at_end']}, "
        f"{step['db_commits_per_saga']} commits/saga, "
        f"{'-' if cpu is None else f'{cpu:.0f}'} ms CPU/saga, "
        f"machine {step['machine_busy']:.0%}{flag}"
    )
