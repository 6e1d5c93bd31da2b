"""Console script: gateway.

One process serves by default. With ``GATEWAY_WORKERS`` above 1, uvicorn's supervisor binds
the port once and starts that many serving processes on it (restarting any that dies, ending
them all on SIGTERM or SIGINT), and /metrics answers for all of them through
prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from gateway.limits import server_options
from gateway.settings import GatewaySettings
from mercato_shared.logs import configure_logging
from mercato_shared.metrics import (
    MULTIPROCESS_DIRECTORY,
    clear_multiprocess_directory,
    multiprocess_directory,
)


class GatewayConfig(uvicorn.Config):
    """uvicorn's configuration, building the gateway in the process that serves it.

    The supervisor hands its configuration to each serving process (pickled, in a fresh
    interpreter), so what is built per process (the application, its metrics, the protocol
    class bound to its refusal counters, the tracer) is built here, in ``load``.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        # Before uvicorn's own set-up, which configures logging with it.
        self.settings = settings
        super().__init__(
            # Replaced in ``load``; a string until then, so the configuration pickles.
            "gateway.app:Gateway",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=None,
            # The gateway writes its own access line (gateway.access), one per request.
            access_log=False,
            proxy_headers=False,
            loop="uvloop",
            **server_options(settings),
        )

    def configure_logging(self) -> None:
        # uvicorn calls this in every process that serves, and its part turns its own access
        # log off again after the gateway's JSON lines have routed every logger to stderr.
        configure_logging("gateway", self.settings.log_level)
        super().configure_logging()

    def load(self) -> None:
        if self.loaded:
            return
        # Imported where the application is built: a supervisor of several serving
        # processes never builds one, and without these takes 80 MB instead of 105.
        from gateway.app import Gateway, create_app
        from gateway.limits import limited_protocol
        from mercato_shared.tracing import setup_tracing

        settings = self.settings
        setup_tracing("gateway")
        gateway = Gateway(settings)
        self.app = create_app(settings, gateway)
        # The HTTP limits: uvicorn's httptools protocol with the checks it lacks.
        self.http = limited_protocol(settings, gateway.refusals)
        super().load()
        # The modules and the application built so far live as long as the process. Frozen,
        # they are left out of the collector's full passes, which otherwise walk some 100,000
        # objects and stall every request in flight for tens of milliseconds.
        gc.collect()
        gc.freeze()


def _prepare_metrics_directory(workers: int) -> Path | None:
    """Empty the multiprocess directory, or make one if several workers need it and none
    is set; returns the directory made, which is this process's to remove."""
    directory = multiprocess_directory()
    if directory is not None:
        clear_multiprocess_directory(directory)
        return None
    if workers == 1:
        return None
    made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    # Inherited by the workers, which import prometheus-client after it is set.
    os.environ[MULTIPROCESS_DIRECTORY] = str(made)
    return made


def main() -> None:
    settings = GatewaySettings()
    made = _prepare_metrics_directory(settings.workers)
    config = GatewayConfig(settings)
    try:
        if settings.workers == 1:
            server = uvicorn.Server(config)
            server.run()
            started = server.started
        else:
            supervisor = Multiprocess(config, sockets=[config.bind_socket()])
            supervisor.run()
            started = all(p.exitcode != STARTUP_FAILURE for p in supervisor.processes)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    if not started:
        sys.exit(STARTUP_FAILURE)
