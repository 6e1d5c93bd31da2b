"""The public OpenAPI document: composed from the services' own documents, cached, and its page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from fastapi import FastAPI

from gateway.app import Gateway
from gateway.settings import HealthCheckConfig, RouteConfig
from inventory_service.app import create_app as inventory_app
from notification_service.app import create_app as notification_app
from order_service.app import create_app as order_app
from payment_service.app import create_app as payment_app
from tests.apps import assert_problem, client_for
from tests.gateway.support import _Server, settings_for

METHODS = {"get", "put", "post", "delete", "patch"}
# Route prefix → the service app whose document the gateway is given.
SERVICES: dict[str, Callable[[], FastAPI]] = {
    "/api/v1/orders": order_app,
    "/api/v1/products": inventory_app,
    "/api/v1/payments": payment_app,
    "/api/v1/notifications": notification_app,
}


class DocumentServer(_Server):
    """An upstream that serves one service's real OpenAPI document, or fails to."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__()
        self.document = document
        self.status = 200
        self.fetches = 0

    async def _openapi(self, _: web.Request) -> web.Response:
        self.fetches += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response(self.document)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/openapi.json", self._openapi)
        app.router.add_get("/healthz", self._healthz)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def upstreams():
    servers = {prefix: DocumentServer(app().openapi()) for prefix, app in SERVICES.items()}
    for server in servers.values():
        await server.__aenter__()
    try:
        yield servers
    finally:
        for server in servers.values():
            await server.__aexit__()


def _gateway(keys, dev_secret, upstreams: dict[str, DocumentServer]) -> Gateway:
    quiet = HealthCheckConfig(interval_seconds=60)
    routes = [
        RouteConfig(prefix=prefix, upstreams=[server.url], health_check=quiet)
        for prefix, server in upstreams.items()
    ]
    return Gateway(settings_for(keys=keys, secret_file=dev_secret, routes=routes))


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_every_service_operation_under_a_route_is_in_the_public_document(
    keys, dev_secret, upstreams
):
    async with client_for(_gateway(keys, dev_secret, upstreams)) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    public = response.json()
    assert public["openapi"].startswith("3.1")
    expected = {("get", "/api/v1/orders/{order_id}/details")}
    for prefix, server in upstreams.items():
        expected |= {
            (method, path)
            for method, path in _operations(server.document)
            if path == prefix or path.startswith(prefix + "/")
        }
    gateway_own = {("get", "/healthz"), ("get", "/readyz"), ("get", "/openapi.json")}
    assert _operations(public) == expected | gateway_own | {("get", "/docs")}
    # The services' schemas come along unchanged, the identity header does not.
    for server in upstreams.values():
        for name, schema in server.document["components"]["schemas"].items():
            assert public["components"]["schemas"][name] == schema
    assert "identity" not in public["components"]["securitySchemes"]


async def test_operations_say_who_may_call_them_and_what_the_gateway_answers(
    keys, dev_secret, upstreams
):
    async with client_for(_gateway(keys, dev_secret, upstreams)) as client:
        public = (await client.get("/openapi.json")).json()
    paths = public["paths"]
    assert public["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    catalogue = paths["/api/v1/products"]["get"]
    assert catalogue["security"] == [{}, {"bearer": []}]
    assert catalogue["x-mercato-access"] == {"public": True, "roles": []}
    assert "403" not in catalogue["responses"]
    stock = paths["/api/v1/products/{sku}/stock"]["put"]
    assert stock["security"] == [{"bearer": []}]
    assert stock["x-mercato-access"] == {"public": False, "roles": ["admin"]}
    assert "admin" in stock["description"]
    place = paths["/api/v1/orders"]["post"]
    assert place["x-mercato-access"]["roles"] == ["admin", "customer"]
    for status in ("400", "401", "403", "409", "413", "422", "429", "502", "503", "504"):
        assert status in place["responses"], status
    key = next(p for p in place["parameters"] if p["name"].lower() == "idempotency-key")
    constraint = key["schema"]["anyOf"][0]
    assert (constraint["minLength"], constraint["maxLength"]) == (1, 255)
    assert constraint["pattern"]
    created = place["responses"]["201"]
    assert {"RateLimit", "RateLimit-Policy", "X-Request-Id"} <= created["headers"].keys()
    components = public["components"]
    for name in ("TooManyRequests", "Unavailable"):
        assert components["responses"][name]["headers"]["Retry-After"] == {
            "$ref": "#/components/headers/Retry-After"
        }
    assert components["headers"]["Retry-After"]["required"] is True
    # Every error of the API is a problem body (a /readyz that is not ready says why in JSON).
    for item in (item for path, item in paths.items() if path.startswith("/api/")):
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    body = (
                        components["responses"][response["$ref"].rsplit("/", 1)[1]]
                        if ("$ref" in response)
                        else response
                    )
                    assert body["content"] == {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }


async def test_the_order_view_is_composed_from_its_parts_documents(keys, dev_secret, upstreams):
    async with client_for(_gateway(keys, dev_secret, upstreams)) as client:
        public = (await client.get("/openapi.json")).json()
    details = public["paths"]["/api/v1/orders/{order_id}/details"]["get"]
    assert details["x-mercato-access"]["roles"] == ["admin", "customer"]
    assert {"401", "403", "404", "422", "429", "503"} <= details["responses"].keys()
    assert "502" not in details["responses"]
    view = public["components"]["schemas"]["OrderDetails"]["properties"]
    assert view["order"]["anyOf"][0] == {"$ref": "#/components/schemas/OrderRead"}
    assert view["payment"]["anyOf"][0] == {"$ref": "#/components/schemas/PaymentRead"}
    assert view["notifications"]["anyOf"][0]["items"] == {
        "$ref": "#/components/schemas/NotificationRead"
    }


async def test_a_service_down_before_its_first_fetch_is_a_503_and_later_the_kept_copy(
    keys, dev_secret, upstreams
):
    orders = upstreams["/api/v1/orders"]
    orders.status = 503
    gateway = _gateway(keys, dev_secret, upstreams)
    async with client_for(gateway) as client:
        refused = await client.get("/openapi.json")
        body = assert_problem(refused, 503)
        assert "/api/v1/orders" in str(body["detail"])
        assert int(refused.headers["retry-after"]) >= 1
        orders.status = 200
        # Asked again before the retry time, the gateway does not fetch again.
        assert (await client.get("/openapi.json")).status_code == 503
        gateway.document._documents._due.clear()
        assert (await client.get("/openapi.json")).status_code == 200
        fetches = orders.fetches
        orders.status = 500
        gateway.document._documents._due.clear()
        kept = await client.get("/openapi.json")
    assert kept.status_code == 200
    assert "/api/v1/orders" in kept.json()["paths"]
    assert orders.fetches == fetches + 1


async def test_documents_are_fetched_once_per_cache_period(keys, dev_secret, upstreams):
    async with client_for(_gateway(keys, dev_secret, upstreams)) as client:
        for _ in range(3):
            assert (await client.get("/openapi.json")).status_code == 200
    assert {server.fetches for server in upstreams.values()} == {1}


async def test_the_docs_page_loads_nothing_from_elsewhere(keys, dev_secret, upstreams):
    async with client_for(_gateway(keys, dev_secret, upstreams)) as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "/openapi.json" in html
        assert "https://" not in html
        assert "http://" not in html
        script = await client.get("/docs/swagger-ui-bundle.js")
        style = await client.get("/docs/swagger-ui.css")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 100_000
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
