"""`python -m bench [NAME[:PART,...]...]`: run the named benchmarks (all by default) in order.

A benchmark made of parts runs only the named ones: `python -m bench pipeline:burst`.
"""

from __future__ import annotations

import importlib
import sys
import time

# Cheapest first, so a broken tool shows up before the long runs.
BENCHMARKS = ("micro", "gateway", "pipeline")


def main(argv: list[str]) -> int:
    chosen = [arg.partition(":") for arg in argv or BENCHMARKS]
    unknown = sorted({name for name, _, _ in chosen} - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    for name, _, parts in chosen:
        module = importlib.import_module(f"bench.{name}")
        if parts and not hasattr(module, "PARTS"):
            print(f"benchmark {name} has no parts to choose from")
            return 2
        started = time.monotonic()
        print(f"== bench {name}{f' ({parts})' if parts else ''}", flush=True)
        if parts:
            module.main(parts.split(","))
        else:
            module.main()
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
