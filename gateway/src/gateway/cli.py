"""Console script: gateway."""

import gc

import uvicorn

from gateway.app import Gateway, create_app
from gateway.limits import server_options
from gateway.settings import GatewaySettings
from mercato_shared.logs import configure_logging
from mercato_shared.tracing import setup_tracing


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    gateway = Gateway(settings)
    app = create_app(settings, gateway)
    # The modules and the application built so far live as long as the process. Frozen, they
    # are left out of the collector's full passes, which otherwise walk some 100,000 objects
    # and stall every request in flight for tens of milliseconds.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        # The gateway writes its own access line (gateway.access), one per request.
        access_log=False,
        proxy_headers=False,
        loop="uvloop",
        # The HTTP limits: uvicorn's httptools protocol with the checks it lacks.
        **server_options(settings, gateway.refusals),
    )
