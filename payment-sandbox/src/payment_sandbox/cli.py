"""Console script: payment-sandbox."""

import uvicorn

from mercato_shared.logs import configure_logging
from payment_sandbox.app import create_app
from payment_sandbox.settings import SandboxSettings


def main() -> None:
    """Serve the sandbox on SANDBOX_HOST:SANDBOX_PORT (127.0.0.1:8090 by default)."""
    settings = SandboxSettings()
    configure_logging("payment-sandbox", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=True,
    )
