"""uvicorn serving inside an event loop its caller owns (a worker, the mail catcher, a test)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that runs it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would install its own SIGTERM/SIGINT handlers and re-raise the signal at
        # exit, taking them from the worker's shutdown (or pytest's).
        yield
