"""The gateway benchmark's plots: results/gateway-throughput.png, -latency.png and -levers.png."""

from __future__ import annotations

from typing import Any

import matplotlib

# No display: the backend is chosen before pyplot loads.
matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.common import plot_path

_ORDER = ("a", "b", "c", "c_cached", "d", "b_traced", "b_sampled", "e", "f")
# Nine bars share each panel: labels of at most about 12 characters a line.
_EXTRA_LABELS = {
    "b_traced": "gateway,\nrouting,\nall spans",
    "b_sampled": "gateway,\nrouting,\n1 span in 10",
    "c_cached": "gateway,\nfull path,\ntoken cache",
    "d": "upstream\ndirect",
    "e": "nginx,\nproxy_cache",
    "f": "gateway,\nroute cache",
    "a_at_gateway_rate": "nginx proxy,\nat the gateway's rate",
    "b_quiet": "gateway,\nrouting, no\naccess line",
}
_COLOURS = {"a": "#4c72b0", "b": "#dd8452", "c": "#c44e52", "c_cached": "#e08a8c", "d": "#8c8c8c"}
_COLOURS |= {"e": "#8fa9d3", "f": "#f0b27a"}


def _label(result: dict[str, Any], key: str) -> str:
    return _EXTRA_LABELS.get(key) or result["labels"][key].replace(", ", ",\n")


def _throughput(result: dict[str, Any]) -> None:
    maxima = result["maximum"]
    nginx = maxima["a"]["rps"]
    labels = [_label(result, key) for key in _ORDER]
    colours = [_COLOURS.get(key, "#e8a76f") for key in _ORDER]
    figure, (rate, cpu) = plt.subplots(1, 2, figsize=(15, 5))
    bars = rate.bar(labels, [maxima[key]["rps"] for key in _ORDER], color=colours)
    for bar, key in zip(bars, _ORDER, strict=True):
        share = maxima[key]["rps"] / nginx
        rate.annotate(
            f"{maxima[key]['rps']:,.0f}\n{share:.0%} of nginx",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    rate.set_ylabel("requests/s (wrk, closed loop, best round)")
    rate.set_title("Maximum throughput, 1 KB JSON upstream")
    rate.margins(y=0.2)
    bars = cpu.bar(labels, [maxima[key]["cpu_us_per_request"] for key in _ORDER], color=colours)
    cpu.bar_label(bars, fmt="%.0f", fontsize=8)
    cpu.set_ylabel("CPU µs per request (the proxy's processes)")
    cpu.set_title("CPU per request: less noisy on a shared machine")
    for axes in (rate, cpu):
        axes.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(plot_path("gateway-throughput"), dpi=110)
    plt.close(figure)


def _latency(result: dict[str, Any]) -> None:
    latency = result["latency"]
    keys = ("a", "a_at_gateway_rate", "b", "c")
    figure, axes = plt.subplots(figsize=(9, 5))
    width = 0.38
    positions = range(len(keys))
    for offset, stat, colour in ((-width / 2, "p50", "#4c72b0"), (width / 2, "p99", "#c44e52")):
        values = [latency[key][f"added_{stat}_ms"] for key in keys]
        bars = axes.bar(
            [p + offset for p in positions], values, width, label=f"added {stat}", color=colour
        )
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    aims = result["aims"]
    axes.axhline(aims["c_added_p50_ms_at_most"], color="#4c72b0", linestyle=":", linewidth=1)
    axes.axhline(aims["c_added_p99_ms_at_most"], color="#c44e52", linestyle=":", linewidth=1)
    axes.set_xticks(
        list(positions),
        [
            f"{_label(result, key)}\nat {latency[key]['rate']:,} req/s"
            + ("\n(rate not kept)" if latency[key]["rate_not_kept"] else "")
            for key in keys
        ],
        fontsize=8,
    )
    axes.axhline(0, color="black", linewidth=0.5)
    # Added p50s are fractions of a millisecond, p99s may be hundreds: linear near zero,
    # logarithmic beyond, so both (and the aims) stay readable.
    axes.set_yscale("symlog", linthresh=1)
    # Room above the tallest bar for its label, on the logarithmic part of the axis.
    tallest = max(latency[key][f"added_{stat}_ms"] for key in keys for stat in ("p50", "p99"))
    axes.set_ylim(top=max(10.0, tallest) * 3)
    axes.set_ylabel("ms over the upstream alone at the same rate (k6)")
    axes.set_title(
        "Added latency at half of each one's maximum, and nginx at the gateway's\n"
        "(dotted: aims for the full path)"
    )
    axes.legend()
    figure.tight_layout()
    figure.savefig(plot_path("gateway-latency"), dpi=110)
    plt.close(figure)


def _levers(result: dict[str, Any]) -> None:
    """The levers: a bare forwarder on each server and client, and two processes each,
    beside nginx and the gateway with one."""
    maxima = result["maximum"]
    keys = ("a", "b", "b_quiet", *result["levers"], "a2", "b2", "c", "c2")
    # A two-process configuration is a share of nginx with two workers.
    nginx = {key: maxima["a2" if key.endswith("2") else "a"]["rps"] for key in keys}
    labels = [
        _label(result, key)
        .replace("bare forwarder,\n", "forwarder,\n")
        .replace(" + ", "\n+ ")
        .replace("two ", "two\n")
        for key in keys
    ]
    colours = [
        _COLOURS.get(key.removesuffix("2").removesuffix("_quiet"), "#55a868") for key in keys
    ]
    figure, axes = plt.subplots(figsize=(12, 5))
    bars = axes.bar(labels, [maxima[key]["cpu_us_per_request"] for key in keys], color=colours)
    for key, bar in zip(keys, bars, strict=True):
        if key.endswith("2"):
            bar.set_hatch("//")
    axes.bar_label(
        bars,
        labels=[
            f"{maxima[key]['cpu_us_per_request']:.0f} µs\n{maxima[key]['rps'] / nginx[key]:.0%}"
            for key in keys
        ],
        fontsize=8,
    )
    axes.set_ylabel("CPU µs per request (the proxy's processes)")
    axes.set_title(
        "The levers: the access line; a bare forwarder on each server and client;"
        " two processes each (hatched)\n"
        "(label: µs per request, and requests/s as a share of nginx's with as many workers)"
    )
    axes.margins(y=0.2)
    axes.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    figure.savefig(plot_path("gateway-levers"), dpi=110)
    plt.close(figure)


def draw(result: dict[str, Any]) -> None:
    """Write the three plots from a result document."""
    _throughput(result)
    _latency(result)
    _levers(result)
