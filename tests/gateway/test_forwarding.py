"""The gateway's forwarding path against real upstream HTTP servers."""

import json

import jwt
import pytest

from gateway.app import Gateway, create_app
from gateway.settings import GatewaySettings, RouteConfig
from mercato_shared.identity import IdentityVerifier, Role
from tests.apps import assert_problem, client_for
from tests.gateway.support import EchoServer, settings_for
from tests.infra import free_port


@pytest.fixture
async def upstreams():
    async with EchoServer("a") as a, EchoServer("b") as b:
        yield a, b


@pytest.fixture
def settings(keys, dev_secret, upstreams, stack):
    a, b = upstreams
    return settings_for(
        keys=keys,
        secret_file=dev_secret,
        max_body_bytes=1024,
        routes=[
            RouteConfig(
                prefix="/api/v1/orders",
                upstreams=[a.url, b.url],
                timeout_seconds=0.5,
                balancer="round_robin",
            ),
            RouteConfig(prefix="/api/v1/products", upstreams=[a.url]),
            RouteConfig(prefix="/api/v1/payments", upstreams=[f"http://127.0.0.1:{free_port()}"]),
            RouteConfig(prefix="/api/v1/notifications", upstreams=[a.url], rate_limited=False),
        ],
    )


@pytest.fixture
async def client(settings):
    async with client_for(create_app(settings)) as client:
        yield client


@pytest.fixture
def bearer(dev_token):
    return {"Authorization": f"Bearer {dev_token('alice')}"}


async def test_forwards_request_with_a_signed_identity_and_clean_headers(client, keys, bearer):
    response = await client.post(
        "/api/v1/orders/42?x=1",
        content=b'{"a": 1}',
        headers={
            **bearer,
            "content-type": "application/json",
            "X-Mercato-Identity": "forged",
            "X-Forwarded-For": "6.6.6.6",
            "Connection": "keep-alive, X-Secret",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "TE": "trailers",
            "X-Secret": "only-for-the-next-hop",
            "Cookie": "session=abc",
            "X-Request-Id": "req-123",
        },
    )
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/api/v1/orders/42?x=1"
    assert json.loads(echoed["body"]) == {"a": 1}
    headers = echoed["headers"]
    for name in ("proxy-authorization", "te", "x-secret", "authorization", "cookie"):
        assert name not in headers
    # The peer is not a trusted proxy, so its X-Forwarded-For is a claim, not a fact.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-request-id"] == "req-123"
    identity = IdentityVerifier.from_path(keys[1], issuer="mercato-gateway").verify(
        headers["x-mercato-identity"]
    )
    assert identity.subject == "alice"
    assert identity.roles == frozenset({Role.CUSTOMER})
    # The request id travels beside the token, which is reused across a caller's requests.
    claims = jwt.decode(headers["x-mercato-identity"], options={"verify_signature": False})
    assert set(claims) == {"sub", "roles", "iss", "iat", "exp"}
    assert "keep-alive" not in response.headers
    assert response.headers["x-upstream"] in {"a", "b"}
    assert response.headers["x-request-id"] == "req-123"


async def test_public_route_is_forwarded_as_anonymous_with_a_fresh_request_id(client, keys):
    response = await client.get("/api/v1/products")
    assert response.status_code == 200
    assert len(response.headers["x-request-id"]) == 32
    echoed = response.json()["headers"]
    assert echoed["x-request-id"] == response.headers["x-request-id"]
    identity = IdentityVerifier.from_path(keys[1], issuer="mercato-gateway").verify(
        echoed["x-mercato-identity"]
    )
    assert (identity.subject, identity.roles) == ("anonymous", frozenset())


async def test_a_callers_identity_token_is_signed_once_and_reused(client, bearer, keys):
    def token(response):
        return response.json()["headers"]["x-mercato-identity"]

    first = await client.get("/api/v1/orders", headers=bearer)
    second = await client.get("/api/v1/orders", headers=bearer | {"X-Request-Id": "other"})
    anonymous = await client.get("/api/v1/products")
    assert token(first) == token(second)
    assert token(anonymous) != token(first)
    assert second.json()["headers"]["x-request-id"] == "other"


async def test_a_route_can_be_exempt_from_rate_limiting(client, bearer):
    limited = await client.get("/api/v1/orders", headers=bearer)
    exempt = await client.get("/api/v1/notifications", headers=bearer)
    assert limited.status_code == exempt.status_code == 200
    assert "ratelimit-policy" in limited.headers
    assert "ratelimit-policy" not in exempt.headers
    assert "ratelimit" not in exempt.headers


async def test_round_robin_over_instances(client, bearer):
    seen = [
        (await client.get("/api/v1/orders", headers=bearer)).json()["upstream"] for _ in range(4)
    ]
    assert seen == ["a", "b", "a", "b"]


async def test_prefix_matches_whole_segments_only(client, upstreams):
    assert_problem(await client.get("/api/v1/ordersX"), 404)
    assert_problem(await client.get("/nowhere"), 404)
    assert all(not upstream.requests for upstream in upstreams)


async def test_an_unknown_path_says_where_the_api_is(client, upstreams):
    # The URL of tutorials that leave out the version prefix.
    body = assert_problem(await client.post("/orders", json={"lines": []}), 404)
    assert body["detail"] == (
        "no route for /orders; the API's routes start with /api/v1/notifications,"
        " /api/v1/orders, /api/v1/payments, /api/v1/products"
    )
    # The gateway's own endpoints and their other answers are unchanged.
    assert (await client.get("/healthz")).status_code == 200
    assert_problem(await client.post("/healthz"), 405)
    assert all(not upstream.requests for upstream in upstreams)


async def test_body_over_the_limit_is_refused(client, upstreams, bearer):
    declared = await client.post("/api/v1/orders", content=b"x" * 1025, headers=bearer)
    assert_problem(declared, 413)

    async def chunks():
        for _ in range(3):
            yield b"x" * 512

    streamed = await client.post("/api/v1/orders", content=chunks(), headers=bearer)
    assert_problem(streamed, 413)
    assert all(not upstream.requests for upstream in upstreams)
    ok = await client.post("/api/v1/orders", content=b"x" * 1024, headers=bearer)
    assert ok.status_code == 200


async def test_unreachable_upstream_is_502_and_slow_one_504(client, upstreams, bearer):
    assert_problem(await client.get("/api/v1/payments/1", headers=bearer), 502)
    for upstream in upstreams:
        upstream.delay = 2
    assert_problem(await client.get("/api/v1/orders/slow", headers=bearer), 504)


async def test_own_health_and_metrics_endpoints(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    metrics = await client.get("/metrics")
    assert "gateway_ratelimit_decisions_total" in metrics.text


async def test_cors_preflight_and_headers_for_allowed_origins(settings):
    cors = settings.model_copy(update={"cors_allow_origins": ["https://shop.example"]})
    async with client_for(create_app(cors)) as client:
        preflight = await client.options(
            "/api/v1/orders",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
        other = await client.get("/api/v1/products", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_production_refuses_the_development_issuer(keys):
    with pytest.raises(ValueError, match="development only"):
        GatewaySettings(environment="prod", identity_private_key_file=keys[0])


def test_gateway_is_plain_asgi_without_cors(settings):
    assert isinstance(create_app(settings), Gateway)


async def test_writes_one_access_line_per_request(client, bearer, caplog):
    caplog.set_level("INFO", logger="gateway.access")
    response = await client.get(
        "/api/v1/products/7?mail=bob@example.com", headers={**bearer, "X-Request-Id": "req-9"}
    )
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "gateway.access"]
    assert record.getMessage() == "GET /api/v1/products/7?mail=bob@example.com 200"
    assert record.method == "GET"
    assert record.status == 200
    assert record.route == "/api/v1/products"
    assert record.request_id == "req-9"
    assert record.duration_ms >= 0
    await client.get("/healthz")
    [_, own] = [r for r in caplog.records if r.name == "gateway.access"]
    assert own.getMessage() == "GET /healthz 200"
    assert own.route is None
