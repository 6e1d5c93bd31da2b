"""Console script: gateway."""

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from mercato_shared.logs import configure_logging
from mercato_shared.tracing import setup_tracing


def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=True,
        proxy_headers=False,
        loop="uvloop",
        http="httptools",
    )
