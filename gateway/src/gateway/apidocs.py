"""``GET /openapi.json``, the public document, and ``GET /docs``, Swagger UI for it.

The services' documents are fetched when the public one is asked for, not at start: a gateway
starts while a service is down, and a service deployed anew is documented within
``CACHE_SECONDS``. Swagger UI comes from the ``fastapi-offline`` package, so the page loads
nothing from outside the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path

import aiohttp
import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute

from gateway.access import AccessPolicy
from gateway.openapi import Document, compose
from gateway.settings import GatewaySettings
from gateway.upstreams import NoInstanceError, Upstream, UpstreamTable
from mercato_shared.problems import problem_response, problem_responses

log = logging.getLogger(__name__)

VERSION = version("mercato-gateway")
# A service's document is fetched again after this long; after a failed fetch, sooner.
CACHE_SECONDS = 60.0
RETRY_SECONDS = 5.0
FETCH_TIMEOUT_SECONDS = 2.0
# The four services' documents are 20-40 KB each; a larger answer is not one of them.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSET_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


class DocumentsUnavailableError(Exception):
    """Some upstream's document could not be fetched and none was fetched before."""

    def __init__(self, prefixes: list[str]) -> None:
        super().__init__(f"no OpenAPI document from {', '.join(prefixes)}")
        self.prefixes = prefixes


class _FetchError(Exception):
    pass


class UpstreamDocuments:
    """Each route's upstream document: fetched when due, the last one kept while it is down."""

    def __init__(self, upstreams: UpstreamTable) -> None:
        self._upstreams = list(upstreams)
        self._documents: dict[str, Document] = {}
        self._due: dict[str, float] = {}
        # Concurrent requests share one round of fetches.
        self._lock = asyncio.Lock()
        self.generation = 0

    async def get(self, session: aiohttp.ClientSession) -> dict[str, Document]:
        """Every route's document by prefix, or DocumentsUnavailableError."""
        if any(self._due.get(u.prefix, 0.0) <= time.monotonic() for u in self._upstreams):
            async with self._lock:
                await self._refresh(session)
        missing = [u.prefix for u in self._upstreams if u.prefix not in self._documents]
        if missing:
            raise DocumentsUnavailableError(missing)
        return {u.prefix: self._documents[u.prefix] for u in self._upstreams}

    async def _refresh(self, session: aiohttp.ClientSession) -> None:
        now = time.monotonic()
        due = [u for u in self._upstreams if self._due.get(u.prefix, 0.0) <= now]
        results = await asyncio.gather(
            *(_fetch(session, upstream) for upstream in due), return_exceptions=True
        )
        for upstream, result in zip(due, results, strict=True):
            if isinstance(result, dict):
                if result != self._documents.get(upstream.prefix):
                    self._documents[upstream.prefix] = result
                    self.generation += 1
                self._due[upstream.prefix] = now + CACHE_SECONDS
            elif isinstance(result, Exception):
                log.warning("no OpenAPI document from %s: %r", upstream.prefix, result)
                self._due[upstream.prefix] = now + RETRY_SECONDS
            else:
                raise result


async def _fetch(session: aiohttp.ClientSession, upstream: Upstream) -> Document:
    """One instance's /openapi.json, within the size and time bounds."""
    try:
        instance, permit = upstream.pick(set())
    except NoInstanceError as exc:
        raise _FetchError(str(exc)) from exc
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        async with session.get(instance.url + "/openapi.json", timeout=timeout) as response:
            if response.status >= 500:
                permit.failure()
                raise _FetchError(f"{instance.url} answered {response.status}")
            permit.success()
            if response.status != 200:
                raise _FetchError(f"{instance.url} answered {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _FetchError(f"{instance.url}: document over {MAX_DOCUMENT_BYTES} B")
    except (aiohttp.ClientError, TimeoutError) as exc:
        permit.failure()
        raise _FetchError(f"{instance.url}: {exc!r}") from exc
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise _FetchError(f"{instance.url}: not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise _FetchError(f"{instance.url}: not an OpenAPI document")
    return document


class PublicDocument:
    """The composed document, rendered again only when an upstream's document changed."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        access: AccessPolicy,
        upstreams: UpstreamTable,
        session: Callable[[], aiohttp.ClientSession | None],
        own: Callable[[], Document],
    ) -> None:
        self._settings = settings
        self._access = access
        self._documents = UpstreamDocuments(upstreams)
        self._session = session
        self._own = own
        self._rendered: tuple[int, bytes] | None = None

    async def render(self) -> bytes:
        """The document as JSON, or DocumentsUnavailableError."""
        session = self._session()
        if session is None:
            raise DocumentsUnavailableError(["the gateway, which is starting"])
        services = await self._documents.get(session)
        generation = self._documents.generation
        if self._rendered is None or self._rendered[0] != generation:
            document = compose(
                services=services, own=self._own(), settings=self._settings, access=self._access
            )
            self._rendered = (generation, json.dumps(document).encode())
        return self._rendered[1]


def docs_router(document: PublicDocument) -> APIRouter:
    """The routes of the public document and its page."""
    router = APIRouter(tags=["gateway"])
    unavailable = problem_responses(503)[503] | {
        "description": "a service's document cannot be fetched and none was fetched before",
        "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
    }

    @router.get(
        "/openapi.json",
        summary="The public OpenAPI document",
        responses={
            200: {
                "description": "this document",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            503: unavailable,
        },
    )
    async def openapi() -> Response:
        try:
            body = await document.render()
        except DocumentsUnavailableError as exc:
            return problem_response(
                503,
                detail=str(exc),
                problem_type="urn:mercato:problem:documents-unavailable",
                headers={"Retry-After": str(int(RETRY_SECONDS))},
            )
        return Response(body, media_type="application/json")

    @router.get(
        "/docs",
        summary="This document's page (Swagger UI)",
        response_class=HTMLResponse,
        responses={200: {"description": "the page", "content": {"text/html": {}}}},
    )
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Mercato API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            # No favicon request to anywhere else.
            swagger_favicon_url="data:,",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    for name in ASSET_TYPES:
        router.add_api_route(
            f"/docs/{name}", _asset(name), methods=["GET"], include_in_schema=False
        )
    return router


def _asset(name: str) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        return FileResponse(
            ASSETS / name,
            media_type=ASSET_TYPES[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return serve


def own_document(routes: list[BaseRoute]) -> Document:
    """The gateway's own endpoints as an OpenAPI document."""
    return get_openapi(title="Mercato gateway", version=VERSION, routes=routes)
