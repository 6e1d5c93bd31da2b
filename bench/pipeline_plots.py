"""The pipeline benchmark's plots: throughput, time to terminal, backlog, scaling, burst.

Each plot is drawn from the parts of the run that produced its data (see pipeline.PARTS).
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines that run benchmarks

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.common import plot_path

AIM_P99_MS = 250.0
AIM_CPU_MS_PER_SAGA = 8.0
AIM_DRAIN_SECONDS = 30.0
COMMITS_PER_SAGA = 12
# The system's processes, gathered into what the backlog plot's CPU panel stacks.
CPU_GROUPS = {
    "saga workers": ("order-worker", "inventory-worker", "payment-worker"),
    "notification-worker": ("notification-worker",),
    "order-api": ("order-api",),
    "postgres": ("postgres",),
    "gateway": ("gateway",),
    "sandbox, mail catcher": ("payment-sandbox", "mail-catcher"),
    "other apis": ("inventory-api", "payment-api", "notification-api"),
}


def _steps(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step of the run in order: one replica, half of saturation, two replicas."""
    steps = list(result.get("steps", ()))
    if "half_saturation" in result:
        steps.append(result["half_saturation"])
    return [*steps, *result.get("scaling", {}).get("steps", ())]


def _group(process: str) -> str | None:
    """The CPU group of a process; a worker's replicas count with it."""
    base = process.removesuffix("-2")
    return next((name for name, members in CPU_GROUPS.items() if base in members), None)


def _shade_steps(ax: Axes, result: dict[str, Any], *, label: bool) -> None:
    """Mark each step's span (and the burst's) on a time axis, shaded, named at the top."""
    origin = result["origin"]
    spans = [
        (s["start"] - origin, s["end"] - origin, f"{s['name']}\n{s['rate']:.0f}/s")
        for s in _steps(result)
    ]
    if "burst" in result:
        burst = result["burst"]
        spans.append((burst["start"] - origin, burst["end"] - origin, "burst"))
    for index, (start, end, name) in enumerate(spans):
        ax.axvspan(start, end, color="tab:blue" if index % 2 else "tab:gray", alpha=0.08)
        if label:
            ax.annotate(
                name,
                xy=((start + end) / 2, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                fontsize=6,
            )


def _throughput(result: dict[str, Any]) -> None:
    fig, (rates, timeline) = plt.subplots(1, 2, figsize=(13, 4.8))
    steps, half = result["steps"], result["half_saturation"]
    bound = result["bound"]["sagas_per_s"]
    # Logarithmic: the bound can lie an order of magnitude above what the system reaches.
    low = max(0.5, min(s["completed_per_s"] for s in [*steps, half]) / 1.5)
    top = max(bound, *(s["offered_per_s"] for s in steps)) * 1.5
    rates.plot(
        [low, top], [low, top], color="lightgray", linestyle=":", label="completed = offered"
    )
    rates.plot(
        [s["offered_per_s"] for s in steps],
        [s["completed_per_s"] for s in steps],
        marker="o",
        label="steps",
    )
    rates.plot(
        half["offered_per_s"],
        half["completed_per_s"],
        marker="s",
        color="tab:green",
        linestyle="none",
        label="half of saturation",
    )
    over = [s for s in steps if s["saturated"]]
    rates.plot(
        [s["offered_per_s"] for s in over],
        [s["completed_per_s"] for s in over],
        marker="o",
        markersize=11,
        markerfacecolor="none",
        markeredgecolor="tab:red",
        linestyle="none",
        label="saturated step",
    )
    rates.axhline(bound, color="tab:red", linestyle="--", label=f"database bound {bound:.0f}/s")
    rates.axhline(bound / 2, color="tab:red", linestyle=":", label="half the bound (aim)")
    rates.set(
        xscale="log",
        yscale="log",
        xlabel="offered orders/s",
        ylabel="completed sagas/s",
        xlim=(low, top),
        ylim=(low, top),
        title="Sagas completed per second, per step",
    )
    rates.legend(fontsize=8, loc="upper left")

    series = result["per_second"]
    timeline.step(series["t"], series["placed"], where="post", label="orders placed/s")
    timeline.step(series["t"], series["completed"], where="post", label="sagas completed/s")
    _shade_steps(timeline, result, label=True)
    timeline.set(xlabel="seconds into the run", ylabel="per second")
    timeline.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(plot_path("pipeline-throughput"), dpi=110)
    plt.close(fig)


def _latency(result: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    steps, half = result["steps"], result["half_saturation"]
    offered = [s["offered_per_s"] for s in steps]
    for quantile, style in (("p50", "o-"), ("p95", "^-"), ("p99", "s-")):
        ax.plot(offered, [s["time_to_terminal_ms"][quantile] for s in steps], style, label=quantile)
    ax.plot(
        half["offered_per_s"],
        half["time_to_terminal_ms"]["p99"],
        "D",
        color="tab:green",
        label=f"p99 at half of saturation ({half['time_to_terminal_ms']['p99']:.0f} ms)",
    )
    ax.axhline(AIM_P99_MS, color="tab:red", linestyle="--", label="aim: p99 ≤ 250 ms")
    ax.set_yscale("log")
    ax.set(
        xlabel="offered orders/s",
        ylabel="POST to terminal state (ms, server-side)",
        title="Time to terminal state per step",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_path("pipeline-latency"), dpi=110)
    plt.close(fig)


def _backlog(result: dict[str, Any]) -> None:
    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(13, 10), sharex=True)
    lag, outbox, pending, cpu = axes
    for group in samples[0]["lag"] if samples else ():
        lag.plot(t, [s["lag"][group] for s in samples], label=f"{group}-worker")
    lag.set(ylabel="consumer lag (events)")
    for service in samples[0]["outbox"] if samples else ():
        outbox.plot(t, [s["outbox"][service] for s in samples], label=service)
    outbox.set(ylabel="outbox backlog (rows)")
    pending.plot(t, [s["pending"] for s in samples], color="tab:purple", label="PENDING orders")
    pending.set(ylabel="orders in flight")
    # Stacked, so that the top edge is the system's share of the machine and the gap to the
    # dashed line is everyone else's (k6, the broker, other users of the cores).
    groups: dict[str, list[float]] = {name: [0.0] * len(samples) for name in CPU_GROUPS}
    for index, sample in enumerate(samples):
        for process, share in sample["cpu"].items():
            group = _group(process)
            if group is not None:
                groups[group][index] += share
    cpu.stackplot(t, *groups.values(), labels=list(groups), alpha=0.8)
    cores = os.cpu_count() or 1
    cpu.plot(
        t,
        [s["machine_busy"] * cores for s in samples],
        color="black",
        linestyle="--",
        label="whole machine",
    )
    cpu.set(ylabel="CPU (cores)", xlabel="seconds into the run", ylim=(0, cores * 1.05))
    for index, ax in enumerate(axes):
        _shade_steps(ax, result, label=index == 0)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(plot_path("pipeline-backlog"), dpi=110)
    plt.close(fig)


def _cpu_by_group(per_saga: dict[str, float]) -> dict[str, float]:
    grouped = dict.fromkeys(CPU_GROUPS, 0.0)
    for process, ms in per_saga.items():
        group = _group(process)
        if group is not None:
            grouped[group] += ms
    return grouped


def _scaling(result: dict[str, Any]) -> None:
    """Completed against offered with one and two replicas; CPU and commits per saga."""
    scaling = result["scaling"]
    fig, (rates, cpu) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=(1.3, 1))
    series = (("1", result["steps"], "tab:blue"), ("2", scaling["steps"], "tab:orange"))
    top = 0.0
    for replicas, steps, color in series:
        offered = [s["offered_per_s"] for s in steps]
        rates.plot(
            offered,
            [s["completed_per_s"] for s in steps],
            "o-",
            color=color,
            label=f"{replicas} replica{'s' if replicas != '1' else ''} of each worker",
        )
        best = scaling["saturated_sagas_per_s"][replicas]
        rates.axhline(best, color=color, linestyle="--", linewidth=1)
        rates.annotate(
            f"{best:.1f}/s",
            xy=(0.01, best),
            xycoords=("axes fraction", "data"),
            color=color,
            va="bottom",
            fontsize=8,
        )
        top = max(top, *offered)
    rates.plot(
        [0, top * 1.05],
        [0, top * 1.05],
        color="lightgray",
        linestyle=":",
        label="completed = offered",
    )
    speedup = scaling["speedup"]
    rates.set(
        xlabel="offered orders/s",
        ylabel="completed sagas/s",
        xlim=(0, top * 1.05),
        ylim=(0, top * 1.05),
        title=f"Saturated throughput, 6 partitions per topic\n(two replicas: {speedup}x)",
    )
    rates.legend(fontsize=8, loc="lower right")

    bars = [
        ("1 replica", scaling["at_saturation"]["1"]),
        ("2 replicas", scaling["at_saturation"]["2"]),
    ]
    if "burst" in result:
        replicas = result["burst"]["replicas"]
        bars.append((f"burst ({replicas} replica{'s' if replicas > 1 else ''})", result["burst"]))
    labels = [name for name, _ in bars]
    bottom = [0.0] * len(bars)
    grouped = [
        _cpu_by_group(
            figures.get("cpu_ms_per_saga_by_process") or figures.get("cpu_ms_per_saga") or {}
        )
        for _, figures in bars
    ]
    for group in CPU_GROUPS:
        heights = [g[group] for g in grouped]
        cpu.bar(labels, heights, bottom=bottom, label=group, alpha=0.85)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for index, (_, figures) in enumerate(bars):
        cpu.annotate(
            f"{figures['db_commits_per_saga']} commits",
            xy=(index, bottom[index]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    cpu.axhline(
        AIM_CPU_MS_PER_SAGA,
        color="tab:red",
        linestyle=":",
        label=f"aim: {AIM_CPU_MS_PER_SAGA:.0f} ms (Mercato's processes)",
    )
    cpu.set(
        ylabel="CPU ms per completed saga",
        ylim=(0, max(bottom, default=1) * 1.15),
        title=(
            "CPU and DB commits per completed saga at saturation\n"
            f"(the bound assumes {COMMITS_PER_SAGA} commits)"
        ),
    )
    cpu.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(plot_path("pipeline-scaling"), dpi=110)
    plt.close(fig)


def _burst(result: dict[str, Any]) -> None:
    """The burst over time: arrivals and completions, lag, outbox, orders in flight."""
    burst, origin = result["burst"], result["origin"]
    start = burst["start"] - origin
    last_post = burst["last_post"] - origin - start
    end = burst["end"] - origin - start
    samples = [s for s in result["samples"] if start - 2 <= s["t"] <= start + end + 5]
    t = [s["t"] - start for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(11, 9.5), sharex=True)
    flow, lag, outbox, pending = axes
    per_second = result["per_second"]
    seconds = [x - start for x in per_second["t"]]
    flow.step(seconds, per_second["placed"], where="post", label="orders placed/s")
    flow.step(seconds, per_second["completed"], where="post", label="sagas completed/s")
    flow.set(ylabel="per second")
    for group in samples[0]["lag"] if samples else ():
        lag.plot(t, [s["lag"][group] for s in samples], label=f"{group}-worker")
    lag.set(ylabel="consumer lag (events)")
    for service in samples[0]["outbox"] if samples else ():
        outbox.plot(t, [s["outbox"][service] for s in samples], label=service)
    outbox.set(ylabel="outbox backlog (rows)")
    pending.plot(t, [s["pending"] for s in samples], color="tab:purple", label="PENDING orders")
    pending.set(ylabel="orders in flight", xlabel="seconds since the burst's first POST")
    drained = (
        f"drained {burst['drain_s']:.1f} s after the last POST"
        if burst["drained"]
        else f"not drained {burst['drain_limit_s']} s after the last POST"
    )
    for index, ax in enumerate(axes):
        # The markers are named once, in the top panel's legend.
        top = index == 0
        ax.axvline(
            last_post,
            color="black",
            linestyle="--",
            linewidth=1,
            label="last POST" if top else None,
        )
        ax.axvspan(
            last_post,
            last_post + AIM_DRAIN_SECONDS,
            color="tab:green",
            alpha=0.08,
            label=f"aim: drained within {AIM_DRAIN_SECONDS:.0f} s" if top else None,
        )
        if burst["drained"]:
            ax.axvline(end, color="tab:red", linewidth=1, label="drained" if top else None)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    # The whole aim window in view, even when the drain ended inside it.
    flow.set_xlim(-2, max(end, last_post + AIM_DRAIN_SECONDS) + 5)
    flow.set_title(
        f"Burst of {burst['placed']:,} orders (of {burst['size']:,}) from {burst['vus']} "
        f"clients, {burst['replicas']} replica{'s' if burst['replicas'] > 1 else ''} of each "
        f"worker\nplaced in {burst['placing_s']:.0f} s ({burst['k6']['rate_limited']} POSTs "
        f"rate-limited, {burst['k6']['shed']} shed), {drained}"
    )
    fig.tight_layout()
    fig.savefig(plot_path("pipeline-burst"), dpi=110)
    plt.close(fig)


def draw(result: dict[str, Any]) -> None:
    """Write the plots of the parts that ran into results/pipeline-*.png.

    throughput, latency (steps), backlog (any), scaling (scaling), burst (burst).
    """
    if "steps" in result:
        _throughput(result)
        _latency(result)
    _backlog(result)
    if "scaling" in result:
        _scaling(result)
    if "burst" in result:
        _burst(result)
