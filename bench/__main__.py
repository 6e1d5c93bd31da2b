"""`python -m bench [NAME[:PART,...]...]`: run the named benchmarks (all by default) in order.

A benchmark made of parts runs only the named ones: `python -m bench pipeline:burst`. The
soak (30 minutes by default) runs only when named: `python -m bench soak`. The exit status
is the first non-zero one a benchmark's ``main`` returned (the soak's verdict).
"""

from __future__ import annotations

import importlib
import sys
import time
from types import ModuleType

# Cheapest first, so a broken tool shows up before the long runs.
BENCHMARKS = ("micro", "gateway", "pipeline")
ON_REQUEST = ("soak",)


def main(argv: list[str]) -> int:
    chosen = [arg.partition(":") for arg in argv or BENCHMARKS]
    names = (*BENCHMARKS, *ON_REQUEST)
    unknown = sorted({name for name, _, _ in chosen} - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(names)}")
        return 2
    # Every name is checked before anything runs: a typo must not cost the runs before it.
    runs: list[tuple[str, ModuleType, list[str]]] = []
    for name, _, spec in chosen:
        module = importlib.import_module(f"bench.{name}")
        parts = spec.split(",") if spec else []
        known = getattr(module, "PARTS", ())
        if set(parts) - set(known):
            choices = ", ".join(known) if known else "none"
            print(f"unknown part(s) of {name}: {spec}; choose from {choices}")
            return 2
        runs.append((name, module, parts))
    status = 0
    for name, module, parts in runs:
        started = time.monotonic()
        label = f"{name} ({', '.join(parts)})" if parts else name
        print(f"== bench {label}", flush=True)
        code = module.main(parts) if parts else module.main()
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
        status = status or (code if isinstance(code, int) else 0)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
