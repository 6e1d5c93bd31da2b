"""Order pipeline: sagas per second through the whole system, against the database's own limit.

The system runs as the end-to-end tests run it (gateway, four services with api and worker,
sandbox with no injected faults, mail catcher; databases and topics of its own). k6 places
orders through the gateway at stepped open-loop rates until the system saturates; each step is
drained before the next. Time to terminal is measured server-side, from the order service's
stored timestamps: ``created_at`` (the POST's transaction) to the terminal history entry.
Consumer lag per group, outbox backlog per service, pending orders and CPU per process are
sampled throughout. A last step runs at half the saturated throughput.

The bound is pgbench running the saga's transactions (bench/pgbench/saga.sql) on the same
server: bound = commits per second / commits per saga.

Commits per saga, a confirmed order, each event relayed on its own (COMMITS_PER_SAGA):
  order         1  POST: order, lines, history, idempotency key, outbox row (order.created)
                2  relay: order.created, order.confirmed (one transaction per batch)
                2  consumer: inventory.reserved (history), payment.authorized (confirm + outbox)
  inventory     1  consumer: order.created (inbox, reservations, outbox)
                1  relay: inventory.reserved
                1  consumer: order.confirmed (reservations committed)
  payment       1  consumer: inventory.reserved (inbox, payment, processor call, outbox)
                1  relay: payment.authorized
                1  consumer: order.confirmed (capture)
  notification  1  consumer: order.confirmed (inbox, notification, mail, sent_at)
Events a service has no handler for (order.created at payment and notification) are skipped
without a transaction. Under load a relay publishes several rows per
transaction, so the four relay commits shrink towards zero and a saga costs between 8 and 12.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench import pipeline_pgbench, pipeline_plots
from bench.common import BENCH_DIR, percentile, save, tool
from bench.pipeline_probe import Finished, Probe, Sample, as_json, handling_times, orders
from bench.pipeline_system import SKUS, Bench, running_system
from mercato_ops.check import Report, run_check
from tests import infra

COMMITS_PER_SAGA = 12
PGBENCH_CLIENTS = 8  # the system's writers: order-api plus a consumer and a relay per worker
PGBENCH_SECONDS = 20
STEP_SECONDS = 15
HALF_STEP_SECONDS = 20
WARMUP_SECONDS = 3  # left out of a step's completion rate: the pipeline fills first
FIRST_RATE_SHARE = 0.01  # of the bound, so the steps scale with the machine
GROWTH = 1.6
MAX_STEPS = 10
SATURATED_STEPS = 2
DRAIN_SECONDS = 30
BUDGET_SECONDS = 180  # for starting steps: the whole run stays under six minutes
AIM_FRACTION = 0.5
AIM_P99_MS = 500.0
K6_SCRIPT = BENCH_DIR / "k6" / "mercato.js"
POST_NAME = "POST /api/v1/orders"  # the k6 script's tag for order placements


async def _k6(bench: Bench, *, subject: str, rate: float, seconds: int) -> dict[str, Any]:
    """Place orders at ``rate`` per second for ``seconds``; k6's summary figures."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        env = {
            **os.environ,
            "MERCATO_URL": bench.system.gateway_url,
            "MERCATO_TOKEN": bench.token(subject),
            "MERCATO_SCENARIOS": "orders",
            "ORDER_RATE": f"{rate:.2f}",
            "DURATION": f"{seconds}s",
            # Followed server-side instead: polling would add load the saga does not need.
            "ORDER_FOLLOW": "false",
            "ORDER_SKUS": ",".join(SKUS),
            # Enough VUs from the start for POSTs that slow down near saturation: k6 starting
            # more mid-step would itself drop arrivals.
            "ORDER_VUS": str(math.ceil(rate) + 20),
            "ORDER_MAX_VUS": str(math.ceil(rate * 10) + 100),
            "BROWSE_PATH": "/api/v1/products/SOCKS",
        }
        process = await asyncio.create_subprocess_exec(
            tool("k6"),
            *("run", "--quiet", "--no-color", "--no-usage-report"),
            *("--summary-export", str(summary), str(K6_SCRIPT)),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        # 99: a threshold was crossed, which saturation steps are meant to do.
        if process.returncode not in (0, 99) or not summary.exists():
            raise RuntimeError(f"k6 failed ({process.returncode}):\n{output.decode()[-3000:]}")
        metrics = json.loads(summary.read_text())["metrics"]
    duration = metrics[f"http_req_duration{{name:{POST_NAME}}}"]
    return {
        "placed": int(metrics["iterations"]["count"]),
        "dropped": int(metrics.get("dropped_iterations", {}).get("count", 0)),
        "failed_share": float(metrics["http_req_failed"]["value"]),
        "post_ms": {
            "p50": round(duration["med"], 1),
            "p95": round(duration["p(95)"], 1),
            "p99": round(duration["p(99)"], 1),
        },
    }


def _latencies(finished: list[Finished], subject: str) -> dict[str, Any]:
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


async def _drain(bench: Bench, probe: Probe, within: float) -> float:
    """Wait until nothing is pending, lagging or unpublished, and orders pass the gateway."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        await asyncio.sleep(0.5)
        sample = probe.latest
        if sample is not None and sample.t > time.time() - 1.5:
            idle = not sample.pending and not any(sample.lag.values())
            if idle and not any(sample.outbox.values()):
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


async def _step(
    bench: Bench, probe: Probe, *, name: str, rate: float, seconds: int
) -> dict[str, Any]:
    """One step at a fixed arrival rate, drained afterwards; what it measured."""
    subject = f"bench-{name}"
    started = time.time()
    load = await _k6(bench, subject=subject, rate=rate, seconds=seconds)
    ended = time.time()
    pending_at_end = probe.latest.pending if probe.latest is not None else 0
    drained_in = await _drain(bench, probe, DRAIN_SECONDS)
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
    commits = 0.0
    if len(steady) >= 2:
        commits = sum(steady[-1].commits[d] - steady[0].commits[d] for d in steady[-1].commits)
        commits /= steady[-1].t - steady[0].t
    cpu = {
        process: sum(s.cpu.get(process, 0.0) for s in steady) / max(1, len(steady))
        for process in (steady[0].cpu if steady else {})
    }
    step = {
        "name": name,
        "rate": round(rate, 2),
        "start": round(first, 3),
        "end": round(last, 3),
        "offered_per_s": round(len(placed) / max(1.0, last - first), 1),
        "completed_per_s": round(completed_per_s, 1),
        **_latencies(finished, subject),
        "k6": load,
        "pending_at_end": pending_at_end,
        "drained_in_s": drained_in,
        "max_lag": _peaks(in_step, "lag"),
        "max_outbox": _peaks(in_step, "outbox"),
        "db_commits_per_s": round(commits, 1),
        "db_commits_per_saga": round(commits / completed_per_s, 1) if completed_per_s else None,
        # Share of one core per process, and what that costs per saga: the machine-independent
        # view of where the time goes.
        "cpu_cores": {p: round(v, 3) for p, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
        "cpu_ms_per_saga": {
            p: round(1000 * v / completed_per_s, 2) if completed_per_s else None
            for p, v in sorted(cpu.items(), key=lambda kv: -kv[1])
        },
        "machine_busy": round(sum(s.machine_busy for s in steady) / max(1, len(steady)), 3),
    }
    step["saturated"] = _saturation(step, seconds)
    return step


def _peaks(samples: list[Sample], field: str) -> dict[str, int]:
    """The highest value of each series of a per-service sample field."""
    peaks: dict[str, int] = {}
    for sample in samples:
        for key, value in getattr(sample, field).items():
            peaks[key] = max(peaks.get(key, 0), value)
    return peaks


def _saturation(step: dict[str, Any], seconds: int) -> list[str]:
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


def _cpu_per_saga(step: dict[str, Any]) -> float:
    return float(sum(v for v in step["cpu_ms_per_saga"].values() if v is not None))


def _summary(step: dict[str, Any]) -> str:
    t = step["time_to_terminal_ms"]
    flag = " SATURATED" if step["saturated"] else ""
    return (
        f"  {step['name']:>6}: offered {step['offered_per_s']:6.1f}/s, completed "
        f"{step['completed_per_s']:6.1f}/s, p50/p95/p99 {t['p50']:.0f}/{t['p95']:.0f}/"
        f"{t['p99']:.0f} ms, pending at end {step['pending_at_end']}, "
        f"{step['db_commits_per_saga']} commits/saga, {_cpu_per_saga(step):.0f} ms CPU/saga, "
        f"machine {step['machine_busy']:.0%}{flag}"
    )


async def _run() -> dict[str, Any]:
    run_started = time.monotonic()
    print(f"pgbench: saga.sql, {PGBENCH_CLIENTS} clients, {PGBENCH_SECONDS} s", flush=True)
    bound = await pipeline_pgbench.measure(
        clients=PGBENCH_CLIENTS, seconds=PGBENCH_SECONDS, commits_per_saga=COMMITS_PER_SAGA
    )
    bound_sagas = bound["commits_per_s"] / COMMITS_PER_SAGA
    print(
        f"  {bound['commits_per_s']:.0f} commits/s (synchronous_commit="
        f"{bound['synchronous_commit']}) -> bound {bound_sagas:.0f} sagas/s",
        flush=True,
    )
    async with running_system() as bench:
        print(f"system up at {time.monotonic() - run_started:.0f} s", flush=True)
        probe = Probe(
            databases=bench.system.databases,
            kafka=infra.KAFKA,
            prefix=bench.system.prefix,
            pids=bench.pids(),
        )
        await probe.start()
        origin = time.time()
        try:
            steps: list[dict[str, Any]] = []
            rate = max(2.0, FIRST_RATE_SHARE * bound_sagas)
            started = time.monotonic()
            for number in range(1, MAX_STEPS + 1):
                step = await _step(bench, probe, name=f"s{number}", rate=rate, seconds=STEP_SECONDS)
                steps.append(step)
                print(_summary(step), flush=True)
                # One step past the first saturated one: completed/s may still climb a little
                # there, and the highest rate reached is the capacity.
                over = sum(1 for s in steps if s["saturated"])
                if over >= SATURATED_STEPS or time.monotonic() - started > BUDGET_SECONDS:
                    break
                rate *= GROWTH
            saturated = max(s["completed_per_s"] for s in steps)
            half = await _step(
                bench, probe, name="half", rate=saturated / 2, seconds=HALF_STEP_SECONDS
            )
            print(_summary(half), flush=True)
            finished = await orders(bench.system.databases["order"])
            handling = await handling_times(bench.system.port)
            report = await _checked(bench)
        finally:
            await probe.stop()
        samples = [as_json(s, origin) for s in probe.samples]
    fraction = saturated / bound_sagas
    half_p99 = half["time_to_terminal_ms"]["p99"]
    return {
        "measured": (
            "time to terminal: server-side, order created_at (the POST's transaction) to its "
            "terminal history entry; completed/s: orders becoming final per second in a step, "
            f"its first {WARMUP_SECONDS} s left out; lag: Kafka committed offsets per group; "
            "outbox backlog: rows per service database"
        ),
        "commits_per_saga": COMMITS_PER_SAGA,
        "commits_per_saga_derivation": (__doc__ or "").split("Commits per saga", 1)[1].strip(),
        "bound": {**bound, "sagas_per_s": round(bound_sagas, 1)},
        "steps": steps,
        "half_saturation": half,
        "saturated_sagas_per_s": saturated,
        "saturation_reached": any(s["saturated"] for s in steps),
        "fraction_of_bound": round(fraction, 3),
        "half_saturation_p99_ms": half_p99,
        "aims": {
            "fraction_of_bound_at_least_half": fraction >= AIM_FRACTION,
            "p99_under_500ms_at_half_saturation": half_p99 < AIM_P99_MS,
        },
        "invariants": {"ok": report.ok, "counts": dict(report.counts)},
        "outcomes": {
            status: sum(o.status == status for o in finished)
            for status in ("CONFIRMED", "CANCELLED", "PENDING")
        },
        "limit": _limit(steps, bound),
        "event_handling_ms": handling,
        "per_second": _per_second(finished, origin),
        "samples": samples,
        "origin": origin,
    }


def _limit(steps: list[dict[str, Any]], bound: dict[str, Any]) -> dict[str, Any]:
    """Where the CPU went in the busiest step, beside what pgbench spent per saga."""
    busiest = max(steps, key=lambda s: s["completed_per_s"])
    per_saga = busiest["cpu_ms_per_saga"]
    cores = os.cpu_count() or 1
    return {
        "step": busiest["name"],
        "machine_busy": busiest["machine_busy"],
        "cpu_ms_per_saga": round(_cpu_per_saga(busiest), 1),
        "postgres_cpu_ms_per_saga": per_saga.get("postgres"),
        # pgbench had the machine to itself: every core's time over its sagas, client included.
        "pgbench_cpu_ms_per_saga": round(1000 * cores / bound["sagas_per_s"], 1),
        "cores": cores,
        "sagas_per_s_if_cpu_bound": round(1000 * cores / _cpu_per_saga(busiest), 1),
    }


def _per_second(finished: list[Finished], origin: float) -> dict[str, list[int]]:
    """Orders placed and orders becoming final in each second of the run."""
    placed: Counter[int] = Counter(int(o.created - origin) for o in finished)
    completed: Counter[int] = Counter(
        int(o.ended - origin) for o in finished if o.ended is not None
    )
    seconds = range(max([0, *placed, *completed]) + 1)
    return {
        "t": list(seconds),
        "placed": [placed[t] for t in seconds],
        "completed": [completed[t] for t in seconds],
    }


async def _checked(bench: Bench, within: float = 30.0) -> Report:
    """`mercato check` on the run's databases: did the invariants hold under load?"""
    deadline = time.monotonic() + within
    while True:
        # Mail delivery trails the last commit a little: look again before calling it broken.
        report = await run_check(bench.system.ops_settings())
        if report.ok or time.monotonic() > deadline:
            return report
        await asyncio.sleep(1.0)


def main() -> None:
    result = asyncio.run(_run())
    pipeline_plots.draw(result)
    origin = result.pop("origin")
    for step in [*result["steps"], result["half_saturation"]]:
        step["start"] = round(step["start"] - origin, 2)
        step["end"] = round(step["end"] - origin, 2)
    path = save("pipeline", result, tools=("k6", "pgbench"))
    print(
        f"saturated at {result['saturated_sagas_per_s']:.1f} sagas/s = "
        f"{result['fraction_of_bound']:.0%} of the bound "
        f"({result['bound']['sagas_per_s']:.0f}/s); p99 at half saturation "
        f"{result['half_saturation_p99_ms']:.0f} ms -> {path}"
    )
