"""Real upstream servers and token makers for the gateway tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any, Self

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from redis.asyncio.connection import Connection

from gateway.settings import GatewaySettings, IssuerConfig, RouteConfig
from mercato_shared.http_cache import strong_etag
from tests.infra import free_port

ISSUER = "https://login.test"
AUDIENCE = "mercato-api"
DEV_ISSUER = "mercato-dev"


class _Server:
    """A real aiohttp server on a free loopback port, run as an async context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        # aiohttp's server parser limits (max_field_size, max_headers...), when tests need more.
        self.handler_args: dict[str, Any] = {}

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, **self.handler_args)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


class EchoServer(_Server):
    """A real HTTP upstream that echoes requests; tests switch it to failing or slow."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        self.healthy = True

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/healthz":
            return web.Response(status=200 if self.healthy else 503)
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path_qs})
        if self.delay:
            await asyncio.sleep(self.delay)
        payload = {
            "upstream": self.name,
            "method": request.method,
            "path": request.path_qs,
            "body": body.decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        return web.json_response(
            payload,
            status=self.status,
            headers={"Keep-Alive": "timeout=5", "X-Upstream": self.name},
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class CatalogueServer(_Server):
    """A real upstream with cacheable answers: a body that counts its fetches, an ETag of
    it, and headers (Cache-Control, Vary, Set-Cookie...) that a test sets."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches = 0
        self.status = 200
        self.headers: dict[str, str] = {"Cache-Control": "public, max-age=60"}
        self.body_bytes = 0  # pad the body to this size
        self.delay = 0.0

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/healthz":
            return web.Response()
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        payload: dict[str, Any] = {
            "path": request.path_qs,
            "fetch": self.fetches,
            "language": request.headers.get("Accept-Language"),
            "conditional": request.headers.get("If-None-Match"),
        }
        if self.body_bytes:
            payload["padding"] = "x" * self.body_bytes
        body = json.dumps(payload).encode()
        return web.Response(
            body=body,
            status=self.status,
            content_type="application/json",
            headers={"ETag": strong_etag(body), **self.headers},
        )

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class JwksServer(_Server):
    """An identity provider's key set endpoint with one RSA and one EC key."""

    def __init__(self) -> None:
        super().__init__()
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.hits = 0

    def document(self) -> dict[str, Any]:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
        return {
            "keys": [
                rsa_jwk | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
                ec_jwk | {"kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    async def _handle(self, _: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.document())

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/jwks.json", self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "roles": ["customer"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    return base | overrides


def settings_for(
    *,
    keys: tuple[Path, Path],
    secret_file: Path,
    routes: list[RouteConfig],
    jwks_url: str | None = None,
    **overrides: Any,
) -> GatewaySettings:
    """Gateway settings for tests: a dev HS256 issuer, optionally a JWKS one, fresh limits."""
    issuers = [
        IssuerConfig(
            issuer=DEV_ISSUER,
            audiences=["mercato"],
            algorithms=["HS256"],
            hs256_secret_file=secret_file,
        )
    ]
    if jwks_url:
        issuers.append(
            IssuerConfig(
                issuer=ISSUER,
                audiences=[AUDIENCE],
                algorithms=["RS256", "ES256"],
                jwks_url=jwks_url,
                leeway_seconds=5,
            )
        )
    return GatewaySettings(
        identity_private_key_file=keys[0],
        auth_issuers=issuers,
        routes=routes,
        redis_key_prefix=f"t-{uuid.uuid4().hex[:8]}:",
        # Client, gateway and upstreams share one event loop here; production keeps 0.1 s.
        redis_timeout_seconds=1.0,
        **overrides,
    )


class CountingConnection(Connection):
    """A Redis connection that counts its writes: one write is one round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)
