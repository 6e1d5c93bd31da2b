"""The payment-api application."""

from fastapi import FastAPI

from mercato_shared.api import create_service_app
from payment_service.api.payments import router
from payment_service.settings import PaymentSettings


def create_app(settings: PaymentSettings | None = None) -> FastAPI:
    """Build the payment API; settings come from PAYMENT_* variables unless given."""
    return create_service_app(
        settings or PaymentSettings(), title="Mercato payment service", routers=[router]
    )
