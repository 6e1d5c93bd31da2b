"""The gateway's forwarding path against real upstream HTTP servers."""

import asyncio
import json

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.settings import GatewaySettings, RouteConfig
from mercato_shared.identity import IdentityVerifier
from tests.apps import assert_problem, client_for
from tests.infra import free_port


class Upstream:
    """A real HTTP server that echoes what it received."""

    def __init__(self, name):
        self.name = name
        self.requests = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(request)
        if request.path.endswith("/slow"):
            await asyncio.sleep(2)
        return web.json_response(
            {
                "upstream": self.name,
                "method": request.method,
                "path": request.path_qs,
                "body": body.decode(),
                "headers": {k.lower(): v for k, v in request.headers.items()},
            },
            headers={"Keep-Alive": "timeout=5", "X-Upstream": self.name},
        )

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def upstreams():
    async with Upstream("a") as a, Upstream("b") as b:
        yield a, b


@pytest.fixture
def settings(keys, upstreams):
    a, b = upstreams
    return GatewaySettings(
        identity_private_key_file=keys[0],
        max_body_bytes=1024,
        routes=[
            RouteConfig(prefix="/api/v1/orders", upstreams=[a.url, b.url], timeout_seconds=0.5),
            RouteConfig(prefix="/api/v1/products", upstreams=[a.url]),
            RouteConfig(prefix="/api/v1/payments", upstreams=[f"http://127.0.0.1:{free_port()}"]),
        ],
    )


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client


async def test_forwards_request_and_signs_identity(client, keys):
    response = await client.post(
        "/api/v1/orders/42?x=1",
        content=b'{"a": 1}',
        headers={
            "content-type": "application/json",
            "X-Mercato-Identity": "forged",
            "X-Forwarded-For": "6.6.6.6",
            "Connection": "keep-alive, X-Secret",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "TE": "trailers",
            "X-Secret": "only-for-the-next-hop",
            "X-Request-Id": "req-123",
        },
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/api/v1/orders/42?x=1"
    assert json.loads(echoed["body"]) == {"a": 1}
    headers = echoed["headers"]
    assert "proxy-authorization" not in headers
    assert "te" not in headers
    assert "x-secret" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == "req-123"
    identity = IdentityVerifier.from_file(keys[1], issuer="mercato-gateway").verify(
        headers["x-mercato-identity"]
    )
    assert identity.subject == "dev-customer"
    assert identity.request_id == "req-123"
    # Upstream's hop-by-hop headers stay on its own connection.
    assert "keep-alive" not in response.headers
    assert response.headers["x-upstream"] in {"a", "b"}
    assert response.headers["x-request-id"] == "req-123"


async def test_mints_a_request_id_when_none_is_given(client):
    response = await client.get("/api/v1/products")
    assert len(response.headers["x-request-id"]) == 32
    assert response.json()["headers"]["x-request-id"] == response.headers["x-request-id"]


async def test_round_robin_over_instances(client):
    seen = [(await client.get("/api/v1/orders")).json()["upstream"] for _ in range(4)]
    assert seen == ["a", "b", "a", "b"]


async def test_prefix_matches_whole_segments_only(client, upstreams):
    assert_problem(await client.get("/api/v1/ordersX"), 404)
    assert_problem(await client.get("/nowhere"), 404)
    assert all(not upstream.requests for upstream in upstreams)


async def test_body_over_the_limit_is_refused_before_forwarding(client, upstreams):
    response = await client.post("/api/v1/orders", content=b"x" * 1025)
    assert_problem(response, 413)
    assert all(not upstream.requests for upstream in upstreams)
    assert (await client.post("/api/v1/orders", content=b"x" * 1024)).status_code == 200


async def test_unreachable_upstream_is_502_and_slow_one_504(client):
    assert_problem(await client.get("/api/v1/payments/1"), 502)
    assert_problem(await client.get("/api/v1/orders/slow"), 504)


async def test_own_health_endpoint(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}


def test_production_refuses_the_development_identity(keys):
    with pytest.raises(ValueError, match="DEV_IDENTITY"):
        GatewaySettings(environment="prod", identity_private_key_file=keys[0])
    settings = GatewaySettings(
        environment="prod", identity_private_key_file=keys[0], dev_identity_subject=""
    )
    assert settings.dev_identity_subject == ""


async def test_without_a_development_identity_callers_are_anonymous(keys, upstreams):
    settings = GatewaySettings(
        identity_private_key_file=keys[0],
        dev_identity_subject="",
        routes=[RouteConfig(prefix="/api/v1/products", upstreams=[upstreams[0].url])],
    )
    async with client_for(create_app(settings)) as client:
        echoed = (await client.get("/api/v1/products")).json()
    identity = IdentityVerifier.from_file(keys[1], issuer="mercato-gateway").verify(
        echoed["headers"]["x-mercato-identity"]
    )
    assert identity.subject == "anonymous"
    assert identity.roles == frozenset()
