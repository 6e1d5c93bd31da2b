"""The burst: 5,000 orders placed as fast as the gateway admits them, then the drain.

k6 places the orders closed loop (``ORDER_COUNT``): a fixed number of VUs, each POSTing its
next order as soon as its last was answered, a rejected POST retried with the same
Idempotency-Key. The gateway's rate policies are far above anything a run reaches
(pipeline_system.RATE_LIMITS), so what sets the pace is the gateway and order-api; the 429s
counted in the result show it. Drain time is from the last POST (the last burst order's
``created_at``) to the first probe sample in which every group's consumer lag, every outbox
backlog and the count of PENDING orders are all 0. For each of those series the result also
says when, after the last POST, it reached 0 for good: the last one to get there is where the
drain waited.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.pipeline_probe import Probe, Sample, orders
from bench.pipeline_steps import costs, idle, k6, latencies, peaks
from bench.pipeline_system import Bench

ORDERS = 5000
# Enough to keep the gateway and order-api busy. More only queue in front of order-api, and
# once POSTs take over 2 s the gateway's breaker counts them slow, opens and sheds (503).
VUS = 8
SUBJECT = "bench-burst"
PLACING_LIMIT = "5m"  # k6 stops placing then; the result says how many it placed
DRAIN_LIMIT_SECONDS = 300  # after the last POST; then the run reports it not drained
AIM_DRAIN_SECONDS = 30.0


async def _drained_at(probe: Probe, *, after: float, within: float) -> float | None:
    """The time of the first idle sample taken after ``after``; None if none came in time."""
    deadline = time.monotonic() + within
    seen = 0
    while True:
        samples = probe.samples
        for sample in samples[seen:]:
            if sample.t > after and idle(sample):
                return sample.t
        seen = len(samples)
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.5)


def _settled(samples: list[Sample], since: float, until: float) -> dict[str, Any]:
    """Seconds after ``since`` at which each series reached 0 and stayed there until ``until``."""

    def settle(values: list[tuple[float, int]]) -> float | None:
        last_busy = max((i for i, (_, v) in enumerate(values) if v), default=None)
        if last_busy is None:
            return 0.0
        if last_busy + 1 >= len(values):
            return None  # not back at 0 by the end
        return round(values[last_busy + 1][0] - since, 1)

    span = [s for s in samples if since <= s.t <= until]
    if not span:
        return {"lag": {}, "outbox": {}, "pending": None}
    return {
        "lag": {g: settle([(s.t, s.lag.get(g, 0)) for s in span]) for g in span[0].lag},
        "outbox": {o: settle([(s.t, s.outbox.get(o, 0)) for s in span]) for o in span[0].outbox},
        "pending": settle([(s.t, s.pending) for s in span]),
    }


async def run(bench: Bench, probe: Probe, *, replicas: int) -> dict[str, Any]:
    """Place the burst, wait for the drain; what it measured (times as epoch seconds)."""
    load = await k6(
        bench,
        subject=SUBJECT,
        env={"ORDER_COUNT": str(ORDERS), "ORDER_VUS": str(VUS), "MAX_DURATION": PLACING_LIMIT},
    )
    database = bench.system.databases["order"]
    placed = sorted(o.created for o in await orders(database) if o.customer == SUBJECT)
    if not placed:
        raise RuntimeError(f"the burst placed no orders: {load}")
    first_post, last_post = placed[0], placed[-1]
    print(
        f"  burst: {len(placed)} of {ORDERS} orders placed in {last_post - first_post:.1f} s; "
        "draining",
        flush=True,
    )
    drained_at = await _drained_at(probe, after=last_post, within=DRAIN_LIMIT_SECONDS)
    end = drained_at if drained_at is not None else time.time()
    finished = await orders(database)
    samples = [s for s in probe.samples if first_post <= s.t <= end]
    at_last_post = next((s for s in samples if s.t >= last_post), None)
    drain_s = None if drained_at is None else round(drained_at - last_post, 1)
    backlog = at_last_post.pending if at_last_post is not None else None
    placing_s = max(last_post - first_post, 1e-3)
    return {
        "size": ORDERS,  # asked for; "placed" is how many k6 got accepted, "orders" what exists
        "vus": VUS,
        "placing_limit": PLACING_LIMIT,
        "replicas": replicas,
        "placed": len(placed),
        "k6": load,
        "start": first_post,
        "last_post": last_post,
        "drained_at": drained_at,
        "end": end,
        "placing_s": round(placing_s, 1),
        "admitted_per_s": round(len(placed) / placing_s, 1),
        "completed_while_placing": sum(
            1
            for o in finished
            if o.customer == SUBJECT and o.ended is not None and o.ended <= last_post
        ),
        "pending_at_last_post": backlog,
        "drained": drained_at is not None,
        "drain_limit_s": DRAIN_LIMIT_SECONDS,
        "drain_s": drain_s,
        "aim_drain_s": AIM_DRAIN_SECONDS,
        "drained_within_aim": drain_s is not None and drain_s < AIM_DRAIN_SECONDS,
        # Sagas completed per second between the last POST and the drain.
        "drain_sagas_per_s": round(backlog / drain_s, 1) if backlog and drain_s else None,
        "settled_after_last_post_s": _settled(probe.samples, last_post, end),
        "max_lag": peaks(samples, "lag"),
        "max_outbox": peaks(samples, "outbox"),
        "max_pending": max((s.pending for s in samples), default=0),
        **latencies(finished, SUBJECT),
        "cancelled": sum(1 for o in finished if o.customer == SUBJECT and o.status == "CANCELLED"),
        # From the first POST to the drain: what the burst cost per saga.
        **costs(samples, finished),
    }


def summary(burst: dict[str, Any]) -> str:
    """The burst's line for the console."""
    drain = f"{burst['drain_s']:.1f} s" if burst["drained"] else f"over {DRAIN_LIMIT_SECONDS} s"
    return (
        f"  burst: {burst['placed']} of {ORDERS} orders in {burst['placing_s']:.1f} s "
        f"({burst['admitted_per_s']:.0f}/s admitted; {burst['k6']['rate_limited']} 429s, "
        f"{burst['k6']['shed']} 503s), "
        f"{burst['pending_at_last_post']} pending at the last POST, drained {drain} after it "
        f"(aim {AIM_DRAIN_SECONDS:.0f} s); settled: {burst['settled_after_last_post_s']}"
    )
