"""Print one order's trace from the native stack's Jaeger as an indented tree.

The Jaeger built from the Go module has no web UI, so this reads its HTTP query API:
`make trace ORDER=<order id>` (or a 32-digit trace id).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
import urllib.request
from typing import Any

# Only the workers' spans carry the order id (the request spans know no id yet when they
# start), and Jaeger matches tags within the searched service.
SEARCHED = ("order-worker", "inventory-worker", "payment-worker", "notification-worker")
TRACE_ID = re.compile(r"[0-9a-f]{32}")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL)
        return json.load(response)


def find_trace(api: str, key: str) -> dict[str, Any] | None:
    """The trace with this id, or the first one whose spans carry this order id."""
    if TRACE_ID.fullmatch(key):
        found: list[dict[str, Any]] = _get(f"{api}/api/traces/{key}")["data"] or []
        return found[0] if found else None
    tags = json.dumps({"mercato.order_id": key})
    for service in SEARCHED:
        query = urllib.parse.urlencode({"service": service, "tags": tags, "lookback": "24h"})
        found = _get(f"{api}/api/traces?{query}")["data"] or []
        if found:
            return found[0]
    return None


def render(trace: dict[str, Any]) -> list[str]:
    """One line per span, children under their parent, by start time."""
    services = {key: process["serviceName"] for key, process in trace["processes"].items()}
    spans = {span["spanID"]: span for span in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        parents = [ref["spanID"] for ref in span.get("references", []) if ref["spanID"] in spans]
        children.setdefault(parents[0] if parents else None, []).append(span)
    start = min(span["startTime"] for span in trace["spans"])
    names = sorted(set(services.values()))
    lines = [f"trace {trace['traceID']}: {len(spans)} spans in {', '.join(names)}"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["startTime"]):
            offset = (span["startTime"] - start) / 1000
            took = span["duration"] / 1000
            label = f"{services[span['processID']]}: {span['operationName']}"
            lines.append(f"{offset:9.1f} ms {took:8.1f} ms  {'  ' * depth}{label}")
            walk(span["spanID"], depth + 1)

    walk(None, 0)
    return lines


def main() -> None:
    """Command line entry: print the trace or say why there is none."""
    port = os.environ.get("MERCATO_JAEGER_UI_PORT", "16686")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", help="an order id or a trace id")
    parser.add_argument("--api", default=f"http://127.0.0.1:{port}", help="Jaeger's query API")
    args = parser.parse_args()
    if not args.key.strip():
        parser.error("give an order id or a trace id: make trace ORDER=<id>")
    try:
        trace = find_trace(args.api.rstrip("/"), args.key.strip())
    except OSError as error:
        sys.exit(f"Jaeger's query API at {args.api} does not answer ({error}): is it running?")
    if trace is None:
        sys.exit(f"no trace for {args.key} yet (processes export spans every 5 s)")
    sys.stdout.write("\n".join(render(trace)) + "\n")


if __name__ == "__main__":
    main()
