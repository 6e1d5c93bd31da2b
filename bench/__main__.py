"""`python -m bench [NAME...]`: run the named benchmarks (all of them by default) in order."""

from __future__ import annotations

import importlib
import sys
import time

# Cheapest first, so a broken tool shows up before the long runs.
BENCHMARKS = ("micro", "gateway", "pipeline")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        started = time.monotonic()
        print(f"== bench {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
