"""The gateway's ASGI application: forwarding for routed paths, FastAPI for its own endpoints."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from fastapi import FastAPI

from gateway.asgi import Receive, Scope, Send
from gateway.proxy import Forwarder, request_id_of
from gateway.routing import RouteTable
from gateway.settings import GatewaySettings
from mercato_shared.health import health_router
from mercato_shared.identity import Role, issue_identity
from mercato_shared.problems import install_problem_handlers


class Gateway:
    """Plain ASGI at the top: routed requests never pay for FastAPI's routing and validation."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self._private_key = b""
        self._forwarder: Forwarder | None = None
        self.admin = FastAPI(title="Mercato gateway", lifespan=self._lifespan)
        install_problem_handlers(self.admin)
        self.admin.include_router(health_router({}))

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        self._private_key = self.settings.identity_private_key_file.read_bytes()
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_connections, keepalive_timeout=30, ttl_dns_cache=60
        )
        async with aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        ) as session:
            self._forwarder = Forwarder(session, max_body_bytes=self.settings.max_body_bytes)
            try:
                yield
            finally:
                self._forwarder = None

    def _identity(self, request_id: str) -> str:
        roles = {Role(role) for role in self.settings.dev_identity_roles}
        subject = self.settings.dev_identity_subject or "anonymous"
        return issue_identity(
            self._private_key,
            subject=subject,
            roles=roles if self.settings.dev_identity_subject else set(),
            issuer=self.settings.identity_issuer,
            request_id=request_id,
            ttl_seconds=self.settings.identity_ttl_seconds,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = self.routes.match(scope["path"])
            if route is not None and self._forwarder is not None:
                request_id = request_id_of(scope)
                await self._forwarder.forward(
                    scope,
                    receive,
                    send,
                    route=route,
                    identity=self._identity(request_id),
                    request_id=request_id,
                )
                return
        await self.admin(scope, receive, send)


def create_app(settings: GatewaySettings | None = None) -> Gateway:
    return Gateway(settings or GatewaySettings())
