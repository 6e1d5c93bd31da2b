"""The pipeline benchmark's plots: throughput, time to terminal, and backlog over time."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines that run benchmarks

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.common import plot_path

AIM_P99_MS = 500.0
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
    return [*result["steps"], result["half_saturation"]]


def _shade_steps(ax: Axes, result: dict[str, Any], *, label: bool) -> None:
    """Mark each step's span on a time axis, alternately shaded, named at the top."""
    origin = result["origin"]
    for index, step in enumerate(_steps(result)):
        start, end = step["start"] - origin, step["end"] - origin
        ax.axvspan(start, end, color="tab:blue" if index % 2 else "tab:gray", alpha=0.08)
        if label:
            ax.annotate(
                f"{step['name']}\n{step['rate']:.0f}/s",
                xy=((start + end) / 2, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                fontsize=7,
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
    ax.axhline(AIM_P99_MS, color="tab:red", linestyle="--", label="aim: p99 < 500 ms")
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
    groups: dict[str, list[float]] = {}
    for name, members in CPU_GROUPS.items():
        groups[name] = [sum(s["cpu"].get(m, 0.0) for m in members) for s in samples]
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


def draw(result: dict[str, Any]) -> None:
    """Write results/pipeline-throughput.png, pipeline-latency.png and pipeline-backlog.png."""
    _throughput(result)
    _latency(result)
    _backlog(result)
