"""What every benchmark shares: tool locations, machine facts, result files, percentiles.

Each benchmark is a module with a `main()` that writes `results/<name>.json` (and its PNG
plots) through `save`, so a result always carries the machine and versions it was measured on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mercato_shared.settings import DEV_STATE_DIR

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
STATE_DIR = Path(os.environ.get("MERCATO_STATE_DIR", str(DEV_STATE_DIR)))
TOOLS_BIN = Path(os.environ.get("MERCATO_TOOLS_DIR", str(STATE_DIR / "tools"))) / "bin"


def tool(name: str) -> str:
    """The path of a benchmark tool that `bench/tools.sh` installed."""
    cached = TOOLS_BIN / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `bash bench/tools.sh`")
    return found


def _first_line(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unavailable"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def machine_facts(tools: Sequence[str] = ()) -> dict[str, Any]:
    """Cores, CPU, memory, OS and the versions of Python and of the given tools."""
    versions = {"python": platform.python_version()}
    version_flags = {"nginx": ["-v"], "wrk": ["-v"], "k6": ["version"], "pgbench": ["--version"]}
    for name in tools:
        try:
            path = tool(name)
        except RuntimeError:
            versions[name] = "not installed"
            continue
        versions[name] = _first_line([path, *version_flags.get(name, ["--version"])])
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions,
    }


def save(
    name: str,
    payload: dict[str, Any],
    *,
    tools: Sequence[str] = (),
    directory: Path = RESULTS_DIR,
) -> Path:
    """Writes `results/<name>.json` (or into ``directory``) with the machine facts and time."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(tools),
        **payload,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def plot_path(name: str, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{name}.png"
