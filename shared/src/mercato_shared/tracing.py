"""OpenTelemetry tracing, switched on by the standard OTEL_EXPORTER_OTLP_* variables.

Without an exporter endpoint nothing is installed: the API's no-op tracer stays in place, so
spans cost next to nothing. Kafka carries the W3C trace context in message headers, and the
outbox keeps it with the row, because the relay publishes later, outside the request.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from importlib.metadata import PackageNotFoundError, version
from typing import Literal

from fastapi.telemetry import TelemetryConfig
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Probes and scrapes arrive every few seconds from every orchestrator and Prometheus; traced,
# they would bury the traces of real requests.
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics/?$"
# FastAPI traces natively as soon as a tracer provider is set. The OpenTelemetry ASGI
# middleware already makes each request's server span, and has to (the gateway's routed
# path is plain ASGI), so FastAPI's own spans would only double every request's.
FASTAPI_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
# The ASGI middleware would also make one internal span per ASGI message (each body chunk
# received or sent): no backend question needs them, and they cost more than the server span.
UNTRACED_MESSAGES: list[Literal["receive", "send"]] = ["receive", "send"]


def enabled() -> bool:
    """Whether an exporter is configured (and so spans are recorded at all)."""
    return any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


def setup_tracing(process: str) -> None:
    """Install a tracer provider exporting over OTLP/HTTP, if an endpoint is configured."""
    if not enabled() or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    try:
        release = version("mercato-shared")
    except PackageNotFoundError:
        release = "0"
    resource = Resource.create(
        {
            "service.name": process,
            "service.namespace": "mercato",
            "service.version": release,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    """Flush spans still buffered (at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def instrument_asgi(app: ASGIApp) -> ASGIApp:
    """Server spans for every request, when tracing is on."""
    if not enabled():
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware(
        app, excluded_urls=UNTRACED_PATHS, exclude_spans=UNTRACED_MESSAGES
    )


def instrument_engine(engine: AsyncEngine) -> None:
    """Database spans for every statement, when tracing is on."""
    if enabled():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # The instrumentation declares support up to SQLAlchemy 2.0 only; it uses nothing that
        # 2.1 changed (engine events), and without this it silently instruments nothing.
        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, skip_dep_check=True)


def untraced() -> AbstractContextManager[None]:
    """A block whose outgoing calls make no spans: the gateway's health probes, for one."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    return suppress_instrumentation()


def current_context_headers() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``), for the outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(headers: Mapping[str, str] | Iterable[tuple[str, bytes]] | None) -> Context:
    """The trace context carried by a stored row's or a Kafka record's headers."""
    if headers is None:
        return Context()
    if isinstance(headers, Mapping):
        return propagate.extract(dict(headers))
    return propagate.extract({key: value.decode(errors="replace") for key, value in headers})


tracer = trace.get_tracer("mercato")
