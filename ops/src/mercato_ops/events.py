"""`mercato events write|check`: the generated event catalogue in docs/events/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mercato_shared import catalogue

DEFAULT_PATH = Path("docs/events/catalogue.json")


def run(action: str, path: Path = DEFAULT_PATH) -> int:
    """Write the catalogue (refusing breaking changes) or check that it is current."""
    current = catalogue.build()
    published = json.loads(path.read_text()) if path.exists() else {"events": {}}
    problems = catalogue.incompatibilities(published, current)
    if problems:
        print("breaking event changes; add a new version instead:", file=sys.stderr)  # noqa: T201
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)  # noqa: T201
        return 1
    text = catalogue.render(current)
    if action == "write":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return 0
    if not path.exists() or path.read_text() != text:
        print(f"{path} is stale: run `make events`", file=sys.stderr)  # noqa: T201
        return 1
    return 0
