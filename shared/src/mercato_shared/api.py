"""The skeleton every domain service's api process shares: lifespan, errors, health, serving.

Dependencies are ``async def`` even when they await nothing: FastAPI runs a plain ``def``
dependency in a worker thread, a thread hop per request for a dictionary lookup.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Generic, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from pydantic import BaseModel, BeforeValidator, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mercato_shared.db import create_engine, create_sessionmaker, ping
from mercato_shared.health import health_router
from mercato_shared.identity import SUBJECT_PATTERN, IdentityVerifier
from mercato_shared.logs import configure_logging
from mercato_shared.metrics import EVENT_LOOP_LAG, EventLoopLag, HttpMetrics, expose_metrics
from mercato_shared.problems import document_problems, install_problem_handlers
from mercato_shared.settings import ServiceSettings
from mercato_shared.tracing import (
    FASTAPI_TELEMETRY,
    UNTRACED_MESSAGES,
    UNTRACED_PATHS,
    instrument_engine,
    setup_tracing,
)
from mercato_shared.tracing import enabled as tracing_enabled

Item = TypeVar("Item", bound=BaseModel)

# The pagination parameters of every listing. An offset past the largest bigint would reach
# Postgres (and asyncpg before it) as a value they cannot hold: a 422, not a 500. Any offset
# below it past the end is an empty page.
BIGINT_MAX = 2**63 - 1
Limit = Annotated[int, Query(ge=1, le=200, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=BIGINT_MAX, description="items skipped")]
# Filtering by customer: the caller's own unless an admin asks.
CustomerFilter = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=255,
        # A subject has no control character (and Postgres text cannot hold a NUL).
        pattern=SUBJECT_PATTERN,
        description="admins only: one customer's",
    ),
]


def _whole_number(value: object) -> object:
    # JSON Schema counts 2.0 as an integer and some JSON encoders write counts so; anything
    # else (a string, a bool, 2.5) is still refused by the strict check after this.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A count in a request body: an integer, never a string or a boolean coerced into one.
WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(strict=True)]
# A product's stock-keeping unit, as the catalogue names it and orders refer to it.
Sku = Annotated[
    str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9-]{0,63}$"), Field(examples=["MUG-BLUE"])
]


class Page(BaseModel, Generic[Item]):
    """One page of a listing: ``limit`` items from ``offset``, of ``total`` in all.

    A service names its pages by subclassing (``class OrderPage(Page[OrderRead])``), so that
    each has a name of its own in the OpenAPI document.
    """

    items: list[Item]
    limit: int
    offset: int
    total: int


def create_service_app(
    settings: ServiceSettings, *, title: str, routers: Iterable[APIRouter]
) -> FastAPI:
    """Build a service's FastAPI app; the engine and key are created in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        instrument_engine(engine)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = create_sessionmaker(engine)
        app.state.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        app.state.identity_verifier = IdentityVerifier.from_path(
            settings.identity_public_keys, issuer=settings.identity_issuer
        )
        lag = EventLoopLag(EVENT_LOOP_LAG, service=settings.service_name).start()
        try:
            yield
        finally:
            lag.cancel()
            await engine.dispose()

    app = FastAPI(
        title=title,
        version="0.1.0",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY,
        dependencies=[Depends(refuse_unknown_query_parameters)],
    )
    install_problem_handlers(app)
    document_problems(app)
    app.add_middleware(HttpMetrics, service=settings.service_name)
    if tracing_enabled():
        app.add_middleware(
            OpenTelemetryMiddleware,
            excluded_urls=UNTRACED_PATHS,
            exclude_spans=UNTRACED_MESSAGES,
        )
    expose_metrics(app)

    async def database() -> None:
        await ping(app.state.engine)

    app.include_router(health_router({"database": database}))
    for router in routers:
        app.include_router(router)
    return app


# The query parameters each route takes, by its dependant's id: routes live as long as the app.
_QUERY_PARAMETERS: dict[int, frozenset[str]] = {}


def _query_parameters(dependant: Dependant) -> frozenset[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return frozenset(names)


async def refuse_unknown_query_parameters(request: Request) -> None:
    """422 for a query parameter the route does not take: a typo is not silently ignored."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _QUERY_PARAMETERS.get(id(dependant))
    if known is None:
        known = _QUERY_PARAMETERS[id(dependant)] = _query_parameters(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": "not a parameter of this route",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ]
        )


async def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    """The process's session factory; service functions open one transaction per request."""
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    return sessions


Sessions = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]


async def get_autocommit(request: Request) -> AsyncEngine:
    """The engine for a use case that is one statement, which is then its own transaction.

    It shares the sessions' pool; a statement run on it costs one round trip, where a
    transaction around it would add a BEGIN and a COMMIT.
    """
    engine: AsyncEngine = request.app.state.autocommit
    return engine


Autocommit = Annotated[AsyncEngine, Depends(get_autocommit)]


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's api under uvicorn with JSON logs (uvloop and httptools when installed)."""
    configure_logging(f"{settings.service_name}-api", settings.log_level)
    setup_tracing(f"{settings.service_name}-api")
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=True,
        proxy_headers=False,
    )
