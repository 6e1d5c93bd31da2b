"""Order pipeline: sagas per second through the whole system, against the database's own limit.

The system runs as the end-to-end tests run it (gateway, four services with api and worker,
sandbox with no injected faults, mail catcher; databases and topics of its own). k6 places
orders through the gateway at stepped open-loop rates until the system saturates; each step is
drained before the next. Time to terminal is measured server-side, from the order service's
stored timestamps: ``created_at`` (the POST's transaction) to the terminal history entry.
Consumer lag per group, outbox backlog per service, pending orders and CPU per process are
sampled throughout. A last step runs at half the saturated throughput.

Scaling: a second replica of every worker then joins (same consumer groups, so each takes
three of a topic's six partitions), and a short series of steps starting at the one-replica
saturated rate finds the two-replica saturated throughput. Last, a burst of 5,000 orders is
placed as fast as the gateway admits them and the time from the last POST until no lag, no
outbox row and no PENDING order is left is measured (bench/pipeline_burst.py).

Parts (``python -m bench pipeline:burst``, several comma-separated): ``steps`` (the bound,
the one-replica series, the half-saturation step), ``scaling`` (needs ``steps``: its series
starts from their saturated rate), ``burst`` (with BURST_REPLICAS workers each). All three by
default. The commits the databases really saw per completed saga at saturation
(``db_commits_per_saga``, from pg_stat_database of the system's own databases) are reported
beside COMMITS_PER_SAGA.

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
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench import pipeline_burst, pipeline_pgbench, pipeline_plots
from bench.common import save
from bench.pipeline_probe import Finished, Probe, as_json, handling_times, orders
from bench.pipeline_steps import WARMUP_SECONDS, step, summary
from bench.pipeline_system import RATE_LIMITS, SAGA_DEADLINE_SECONDS, Bench, running_system
from mercato_ops.check import Report, run_check
from tests import infra

PARTS = ("steps", "scaling", "burst")
COMMITS_PER_SAGA = 12
PGBENCH_CLIENTS = 8  # the system's writers: order-api plus a consumer and a relay per worker
PGBENCH_SECONDS = 20
STEP_SECONDS = 15
HALF_STEP_SECONDS = 20
FIRST_RATE_SHARE = 0.01  # of the bound, so the steps scale with the machine
GROWTH = 1.6
MAX_STEPS = 10
SATURATED_STEPS = 2
BUDGET_SECONDS = 180  # for starting steps: the one-replica series stays under four minutes
# Two replicas: from the one-replica saturated rate up, a few steps at most.
SCALING_GROWTH = 1.25
SCALING_MAX_STEPS = 3
BURST_REPLICAS = 2
AIM_FRACTION = 0.5
AIM_P99_MS = 250.0
AIM_CPU_MS_PER_SAGA = 8.0


async def _series(
    bench: Bench, probe: Probe, *, prefix: str, rate: float, growth: float, most: int, replicas: int
) -> list[dict[str, Any]]:
    """Steps of growing rate until one past the first saturated one (or ``most``)."""
    steps: list[dict[str, Any]] = []
    started = time.monotonic()
    for number in range(1, most + 1):
        record = await step(
            bench,
            probe,
            name=f"{prefix}{number}",
            rate=rate,
            seconds=STEP_SECONDS,
            replicas=replicas,
        )
        steps.append(record)
        print(summary(record), flush=True)
        # One step past the first saturated one: completed/s may still climb a little
        # there, and the highest rate reached is the capacity. Consecutive ones: on a busy
        # machine a low step can be judged saturated (k6 late, a slow first order) and
        # must not end the series.
        over = steps[-SATURATED_STEPS:]
        if len(over) == SATURATED_STEPS and all(s["saturated"] for s in over):
            break
        if time.monotonic() - started > BUDGET_SECONDS:
            break
        rate *= growth
    return steps


def _busiest(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return max(steps, key=lambda s: s["completed_per_s"])


def _at_saturation(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Commits and CPU per saga in the step of highest throughput: what one saga really cost."""
    busiest = _busiest(steps)
    return {
        "step": busiest["name"],
        "replicas": busiest["replicas"],
        "completed_per_s": busiest["completed_per_s"],
        "seconds": busiest["seconds"],
        "sagas": busiest["sagas"],
        "db_commits": busiest["db_commits"],
        "db_commits_by_database": busiest["db_commits_by_database"],
        "db_commits_per_saga": busiest["db_commits_per_saga"],
        "cpu_ms_per_saga_total": busiest["cpu_ms_per_saga_total"],
        "cpu_ms_per_saga_mercato": busiest["cpu_ms_per_saga_mercato"],
        "cpu_ms_per_saga_by_process": busiest["cpu_ms_per_saga"],
        "machine_busy": busiest["machine_busy"],
    }


async def _saturate(bench: Bench, probe: Probe, bound_sagas: float) -> dict[str, Any]:
    """The one-replica series and the half-saturation step."""
    steps = await _series(
        bench,
        probe,
        prefix="s",
        rate=max(2.0, FIRST_RATE_SHARE * bound_sagas),
        growth=GROWTH,
        most=MAX_STEPS,
        replicas=1,
    )
    saturated = _busiest(steps)["completed_per_s"]
    half = await step(bench, probe, name="half", rate=saturated / 2, seconds=HALF_STEP_SECONDS)
    print(summary(half), flush=True)
    return {"steps": steps, "half_saturation": half}


async def _replicas(bench: Bench, probe: Probe) -> float:
    """A second process of every worker, their CPU accounted; seconds until all had partitions."""
    started = time.monotonic()
    probe.watch(await bench.add_replicas())
    took = round(time.monotonic() - started, 1)
    print(f"second worker replicas ready in {took} s", flush=True)
    return took


async def _scale(bench: Bench, probe: Probe, one: list[dict[str, Any]]) -> dict[str, Any]:
    """Two replicas of every worker: steps from the one-replica saturated rate up."""
    ready_s = await _replicas(bench, probe)
    single = _busiest(one)
    steps = await _series(
        bench,
        probe,
        prefix="r2-s",
        rate=single["completed_per_s"],
        growth=SCALING_GROWTH,
        most=SCALING_MAX_STEPS,
        replicas=2,
    )
    double = _busiest(steps)
    return {
        "partitions_per_topic": 6,
        "replicas_ready_s": ready_s,
        "steps": steps,
        "saturated_sagas_per_s": {"1": single["completed_per_s"], "2": double["completed_per_s"]},
        "saturation_reached": {
            "1": any(s["saturated"] for s in one),
            "2": any(s["saturated"] for s in steps),
        },
        "speedup": (
            round(double["completed_per_s"] / single["completed_per_s"], 2)
            if single["completed_per_s"]
            else None
        ),
        "at_saturation": {"1": _at_saturation(one), "2": _at_saturation(steps)},
    }


async def _bound() -> dict[str, Any]:
    print(f"pgbench: saga.sql, {PGBENCH_CLIENTS} clients, {PGBENCH_SECONDS} s", flush=True)
    bound = await pipeline_pgbench.measure(
        clients=PGBENCH_CLIENTS, seconds=PGBENCH_SECONDS, commits_per_saga=COMMITS_PER_SAGA
    )
    sagas = bound["commits_per_s"] / COMMITS_PER_SAGA
    print(
        f"  {bound['commits_per_s']:.0f} commits/s (synchronous_commit="
        f"{bound['synchronous_commit']}) -> bound {sagas:.0f} sagas/s",
        flush=True,
    )
    return {**bound, "sagas_per_s": round(sagas, 1)}


async def _run(parts: Sequence[str]) -> dict[str, Any]:
    run_started = time.monotonic()
    result: dict[str, Any] = {
        "parts": list(parts),
        "measured": (
            "time to terminal: server-side, order created_at (the POST's transaction) to its "
            "terminal history entry; completed/s: orders becoming final per second in a step, "
            f"its first {WARMUP_SECONDS} s left out; lag: Kafka committed offsets per group; "
            "outbox backlog: rows per service database; DB commits: xact_commit of the "
            "system's four databases in pg_stat_database, the probe's own queries left out"
        ),
        "gateway_rate_limits": RATE_LIMITS,
        "saga_deadline_seconds": SAGA_DEADLINE_SECONDS,
        "commits_per_saga": COMMITS_PER_SAGA,
    }
    bound = await _bound() if "steps" in parts else None
    async with running_system() as bench:
        print(f"system up at {time.monotonic() - run_started:.0f} s", flush=True)
        probe = Probe(
            databases=bench.system.databases,
            kafka=infra.KAFKA,
            prefix=bench.system.prefix,
            pids=bench.pids(),
        )
        await probe.start()
        result["origin"] = time.time()
        try:
            if bound is not None:
                result |= _saturation_result(
                    await _saturate(bench, probe, bound["sagas_per_s"]), bound
                )
            if "scaling" in parts:
                result["scaling"] = await _scale(bench, probe, result["steps"])
            if "burst" in parts:
                replicas = 1 + len(bench.replicas) // 4
                if replicas < BURST_REPLICAS:
                    await _replicas(bench, probe)
                    replicas = BURST_REPLICAS
                result["burst"] = await pipeline_burst.run(bench, probe, replicas=replicas)
                print(pipeline_burst.summary(result["burst"]), flush=True)
            finished = await orders(bench.system.databases["order"])
            result["event_handling_ms"] = await handling_times(bench.system.port)
            report = await checked(bench)
        finally:
            await probe.stop()
    result["invariants"] = {"ok": report.ok, "counts": dict(report.counts)}
    if not report.ok:
        print(f"mercato check FAILED: {report.violations[:10]}", flush=True)
    result["outcomes"] = {
        status: sum(o.status == status for o in finished)
        for status in ("CONFIRMED", "CANCELLED", "PENDING")
    }
    result["per_second"] = _per_second(finished, result["origin"])
    result["samples"] = [as_json(s, result["origin"]) for s in probe.samples]
    return result


def _saturation_result(series: dict[str, Any], bound: dict[str, Any]) -> dict[str, Any]:
    """The one-replica figures: saturation against the bound, commits and CPU per saga."""
    steps, half = series["steps"], series["half_saturation"]
    saturated = _busiest(steps)["completed_per_s"]
    fraction = saturated / bound["sagas_per_s"]
    half_p99 = half["time_to_terminal_ms"]["p99"]
    at = _at_saturation(steps)
    cpu = at["cpu_ms_per_saga_mercato"]
    return {
        # Measured beside the assumed: what the databases committed per saga at saturation.
        "db_commits_per_saga": at["db_commits_per_saga"],
        "commits_per_saga_derivation": (__doc__ or "").split("Commits per saga", 1)[1].strip(),
        "bound": bound,
        "steps": steps,
        "half_saturation": half,
        "saturated_sagas_per_s": saturated,
        "saturation_reached": any(s["saturated"] for s in steps),
        "fraction_of_bound": round(fraction, 3),
        "half_saturation_p99_ms": half_p99,
        "at_saturation": at,
        "cpu_ms_per_saga_at_saturation": {
            "mercato": cpu,
            "total": at["cpu_ms_per_saga_total"],
            "by_process": at["cpu_ms_per_saga_by_process"],
            "aim_ms": AIM_CPU_MS_PER_SAGA,
        },
        "aims": {
            "fraction_of_bound_at_least_half": fraction >= AIM_FRACTION,
            "p99_at_most_250ms_at_half_saturation": half_p99 <= AIM_P99_MS,
            "mercato_cpu_ms_per_saga_at_most_8": cpu is not None and cpu <= AIM_CPU_MS_PER_SAGA,
        },
        "limit": _limit(steps, bound),
    }


def _limit(steps: list[dict[str, Any]], bound: dict[str, Any]) -> dict[str, Any]:
    """Where the CPU went in the busiest step, beside what pgbench spent per saga."""
    busiest = _busiest(steps)
    per_saga = busiest["cpu_ms_per_saga"]
    total = busiest["cpu_ms_per_saga_total"]
    cores = os.cpu_count() or 1
    return {
        "step": busiest["name"],
        "machine_busy": busiest["machine_busy"],
        "cpu_ms_per_saga": total,
        "cpu_ms_per_saga_mercato": busiest["cpu_ms_per_saga_mercato"],
        "cpu_ms_per_saga_by_process": per_saga,
        "postgres_cpu_ms_per_saga": per_saga.get("postgres"),
        # pgbench had the machine to itself: every core's time over its sagas, client included.
        "pgbench_cpu_ms_per_saga": round(1000 * cores / bound["sagas_per_s"], 1),
        "cores": cores,
        "sagas_per_s_if_cpu_bound": round(1000 * cores / total, 1) if total else None,
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


async def checked(bench: Bench, within: float = 30.0) -> Report:
    """`mercato check` on the run's databases: did the invariants hold under load?"""
    deadline = time.monotonic() + within
    while True:
        # Mail delivery trails the last commit a little: look again before calling it broken.
        report = await run_check(bench.system.ops_settings())
        if report.ok or time.monotonic() > deadline:
            return report
        await asyncio.sleep(1.0)


def _relative(result: dict[str, Any], origin: float) -> None:
    """Times in the result file as seconds into the run, as the samples' are."""
    steps = [*result.get("steps", ()), *result.get("scaling", {}).get("steps", ())]
    if "half_saturation" in result:
        steps.append(result["half_saturation"])
    for record in steps:
        record["start"] = round(record["start"] - origin, 2)
        record["end"] = round(record["end"] - origin, 2)
    burst = result.get("burst")
    if burst is not None:
        for key in ("start", "last_post", "drained_at", "end"):
            if burst[key] is not None:
                burst[key] = round(burst[key] - origin, 2)


def main(parts: Sequence[str] = PARTS) -> None:
    """Run the given parts (all by default); results/pipeline.json and its plots."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown pipeline part(s): {', '.join(unknown)}; choose from {PARTS}")
    chosen = [p for p in PARTS if p in parts or (p == "steps" and "scaling" in parts)]
    if chosen != list(parts):
        print(f"pipeline parts: {', '.join(chosen)}", flush=True)
    result = asyncio.run(_run(chosen))
    pipeline_plots.draw(result)
    _relative(result, result.pop("origin"))
    path = save("pipeline", result, tools=("k6", "pgbench"))
    if "steps" in result:
        print(
            f"saturated at {result['saturated_sagas_per_s']:.1f} sagas/s = "
            f"{result['fraction_of_bound']:.0%} of the bound "
            f"({result['bound']['sagas_per_s']:.0f}/s); p99 at half saturation "
            f"{result['half_saturation_p99_ms']:.0f} ms; {result['db_commits_per_saga']} DB "
            f"commits per saga (assumed {COMMITS_PER_SAGA}); "
            f"{result['cpu_ms_per_saga_at_saturation']['mercato']} ms of Mercato CPU per saga"
        )
    if "scaling" in result:
        scaling = result["scaling"]
        print(f"scaling: saturated sagas/s by replicas {scaling['saturated_sagas_per_s']}")
    if "burst" in result:
        burst = result["burst"]
        print(f"burst: drained {burst['drain_s']} s after the last POST (aim 30 s)")
    print(f"-> {path}")
