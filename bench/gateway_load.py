"""Load generators: wrk for the closed-loop maximum, k6's constant arrival rate for latency.

wrk keeps a fixed number of connections busy, so it finds the most requests per second a
server sustains but hides queueing (coordinated omission). k6's constant-arrival-rate
executor starts requests on a schedule whatever the server does, so its percentiles show
the latency a client sees at that rate; requests it could not start are counted as dropped.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import tool

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_K6_SCRIPT = """\
import http from 'k6/http';

const headers = __ENV.AUTHORIZATION ? { Authorization: __ENV.AUTHORIZATION } : {};

export const options = {
    discardResponseBodies: true,
    summaryTrendStats: ['avg', 'p(50)', 'p(90)', 'p(99)', 'max'],
    scenarios: {
        open: {
            executor: 'constant-arrival-rate',
            rate: Number(__ENV.RATE),
            timeUnit: '1s',
            duration: __ENV.DURATION,
            preAllocatedVUs: Number(__ENV.VUS),
            maxVUs: Number(__ENV.VUS) * 4,
        },
    },
};

export default function () {
    http.get(__ENV.URL, { headers: headers });
}
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class K6Result:
    target_rps: int
    achieved_rps: float
    dropped: int
    failed_ratio: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of wrk's report (run with --latency)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", output, re.MULTILINE))
    if rps is None or total is None or len(percentiles) != 2:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        errors=errors,
        p50_ms=_milliseconds(percentiles["50"]),
        p99_ms=_milliseconds(percentiles["99"]),
    )


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    authorization: str | None = None,
) -> WrkResult:
    """The closed-loop maximum: ``connections`` keep-alive connections, as fast as answered."""
    argv = [tool("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency"]
    if authorization:
        argv += ["-H", f"Authorization: {authorization}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, check=True, timeout=seconds + 30
    )
    return parse_wrk(done.stdout)


def k6(
    url: str,
    *,
    rate: float,
    seconds: float,
    vus: int,
    authorization: str | None = None,
) -> K6Result:
    """Open-loop latency: ``rate`` requests per second started on schedule for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="mercato-k6-") as scratch:
        script = Path(scratch) / "open.js"
        script.write_text(_K6_SCRIPT)
        summary = Path(scratch) / "summary.json"
        env = {
            **os.environ,
            "K6_NO_USAGE_REPORT": "true",
            "URL": url,
            "RATE": str(max(1, round(rate))),
            "DURATION": f"{seconds:.0f}s",
            "VUS": str(vus),
            "AUTHORIZATION": authorization or "",
        }
        subprocess.run(
            [tool("k6"), "run", "--quiet", "--summary-export", str(summary), str(script)],
            env=env,
            capture_output=True,
            check=True,
            timeout=seconds + 60,
        )
        metrics = json.loads(summary.read_text())["metrics"]
    duration = metrics["http_req_duration"]
    return K6Result(
        target_rps=max(1, round(rate)),
        achieved_rps=metrics["http_reqs"]["rate"],
        dropped=int(metrics.get("dropped_iterations", {}).get("count", 0)),
        failed_ratio=metrics["http_req_failed"].get("value", 0.0),
        p50_ms=duration["p(50)"],
        p90_ms=duration["p(90)"],
        p99_ms=duration["p(99)"],
        max_ms=duration["max"],
    )
