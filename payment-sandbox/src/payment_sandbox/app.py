"""The payment-sandbox application: a card processor's API over a durable SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mercato_shared.health import health_router
from mercato_shared.problems import install_problem_handlers
from mercato_shared.tracing import FASTAPI_TELEMETRY
from payment_sandbox.api import router
from payment_sandbox.faults import Faults
from payment_sandbox.ledger import Ledger
from payment_sandbox.settings import SandboxSettings


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """Build the sandbox; settings come from SANDBOX_* variables unless given.

    It plays an outside card processor, so it trusts no Mercato identity header: like a real
    processor's test mode, anyone who can reach it may use it (it listens on loopback).
    """
    settings = settings or SandboxSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = Ledger(settings.database_path)
        app.state.settings = settings
        app.state.ledger = ledger
        app.state.faults = Faults(settings.knobs())
        try:
            yield
        finally:
            ledger.close()

    app = FastAPI(
        title="Mercato payment sandbox",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY,
    )
    install_problem_handlers(app)

    async def ledger_file() -> None:
        app.state.ledger.ping()

    app.include_router(health_router({"ledger": ledger_file}))
    app.include_router(router)
    return app
