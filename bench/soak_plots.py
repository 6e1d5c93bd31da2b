"""The soak's plot: per process memory, descriptors, connections, lag; the system's health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the machines that run benchmarks

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.common import plot_path

PROCESS_PANELS = (
    ("rss_mib", "RSS (MiB)"),
    ("fds", "open file descriptors"),
    ("db_connections", "database connections"),
    ("loop_lag_ms", "event-loop lag (ms, worst of 10 s)"),
)


def _mark_phases(ax: Axes, result: dict[str, Any]) -> None:
    """Shade the warm-up and draw where the load stopped."""
    ax.axvspan(0, result["warmup_s"], color="0.9", zorder=0)
    ax.axvline(result["load_end_s"], color="0.5", linestyle="--", linewidth=0.8)


def _process_panel(ax: Axes, result: dict[str, Any], key: str, title: str) -> None:
    series = result["series"]
    # Eleven processes: twenty colours rather than the default ten.
    ax.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
    for name, values in sorted(series["processes"].items()):
        ax.plot(series["t"], values[key], linewidth=1, label=name)
    ax.set_title(title, fontsize=9)
    _mark_phases(ax, result)


def _system_panels(axes: list[Axes], result: dict[str, Any]) -> None:
    series = result["series"]
    t, system, seconds = series["t"], series["system"], series["seconds"]
    ax = axes[0]
    for key, label in (("requests", "gateway requests/s"), ("placed", "orders placed/s")):
        ax.plot(
            t, [n / d if d else 0 for n, d in zip(system[key], seconds, strict=True)], label=label
        )
    ax.plot(t, system["failed_not_429"], color="tab:red", label="failed (not 429), count")
    ax.set_title("load and failures", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(t, system["consumer_lag"], label="consumer lag (records, max)")
    ax.plot(t, system["outbox_backlog"], label="outbox backlog (rows, max)")
    ax.plot(t, system["pending"], label="pending orders (max)")
    twin = ax.twinx()
    twin.plot(t, system["p99_time_to_terminal_ms"], color="black", linewidth=1)
    twin.set_ylabel("p99 time to terminal of the orders placed (ms, black)", fontsize=8)
    ax.set_title("backlog and time to terminal", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    for each in axes:
        _mark_phases(each, result)


def draw(result: dict[str, Any], directory: Path) -> Path:
    """soak.png: four per-process panels and two for the system, on one time axis."""
    fig, grid = plt.subplots(3, 2, figsize=(14, 11), sharex=True)
    panels = list(grid.flat)
    for ax, (key, title) in zip(panels, PROCESS_PANELS, strict=False):
        _process_panel(ax, result, key, title)
    _system_panels(panels[4:], result)
    panels[0].legend(fontsize=7, ncol=2)
    for ax in panels[4:]:
        ax.set_xlabel("seconds into the run (shaded: warm-up; dashed: load stops)")
    verdict = "PASS" if result["verdict"]["ok"] else "FAIL"
    fig.suptitle(
        f"Soak: {result['rate']['orders_per_s']:g} orders/s and "
        f"{result['rate']['reads_per_s']:g} reads/s for {result['duration_s']:g} s: {verdict}"
    )
    fig.tight_layout()
    path = plot_path("soak", directory)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
