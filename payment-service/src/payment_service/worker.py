"""The payment-worker process: consumes reservations and order outcomes, relays its outbox."""

from mercato_shared.worker import WorkerSpec
from payment_service.handlers import build_handlers
from payment_service.models import inbox, outbox
from payment_service.sandbox import SandboxClient
from payment_service.settings import PaymentSettings


def build_spec(settings: PaymentSettings | None = None) -> WorkerSpec:
    settings = settings or PaymentSettings()
    # The client opens its connection pool lazily, inside the worker's event loop.
    sandbox = SandboxClient.from_settings(settings)
    return WorkerSpec(
        settings=settings,
        outbox=outbox,
        inbox=inbox,
        topics=("inventory", "orders"),
        handlers=build_handlers(settings, sandbox),
        # Authorizations and captures of different orders wait on the processor together.
        concurrency=settings.sandbox_calls_per_batch,
        closers=(sandbox.aclose,),
    )
