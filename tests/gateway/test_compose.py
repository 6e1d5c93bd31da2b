"""The composed order view, with its parts' services up, down or saying no."""

import uuid

import pytest

from gateway.app import Gateway
from gateway.settings import HealthCheckConfig, RouteConfig
from tests.apps import assert_problem, client_for
from tests.gateway.support import EchoServer, settings_for
from tests.infra import free_port


@pytest.fixture
async def services():
    async with EchoServer("order") as order, EchoServer("payment") as payment:
        async with EchoServer("notification") as notification:
            yield order, payment, notification


def _gateway(keys, dev_secret, order, payment, notification_url):
    quiet = HealthCheckConfig(interval_seconds=60)
    routes = [
        RouteConfig(prefix="/api/v1/orders", upstreams=[order.url], health_check=quiet),
        RouteConfig(prefix="/api/v1/payments", upstreams=[payment.url], health_check=quiet),
        RouteConfig(
            prefix="/api/v1/notifications", upstreams=[notification_url], health_check=quiet
        ),
    ]
    return Gateway(settings_for(keys=keys, secret_file=dev_secret, routes=routes))


async def test_details_fetches_every_part_with_the_callers_identity(
    keys, dev_secret, services, dev_token, stack
):
    order, payment, notification = services
    order_id = uuid.uuid4()
    bearer = {"Authorization": f"Bearer {dev_token('alice')}"}
    async with client_for(_gateway(keys, dev_secret, order, payment, notification.url)) as client:
        response = await client.get(f"/api/v1/orders/{order_id}/details", headers=bearer)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["missing"] == []
    assert view["order"]["path"] == f"/api/v1/orders/{order_id}"
    assert view["payment"]["path"] == f"/api/v1/payments/{order_id}"
    assert view["notifications"] == []  # the echo has no items
    assert [r["path"] for r in notification.requests] == [
        f"/api/v1/notifications?order_id={order_id}"
    ]
    assert "x-mercato-identity" in view["order"]["headers"]
    assert "authorization" not in view["order"]["headers"]


async def test_a_service_that_is_down_is_marked_missing(
    keys, dev_secret, services, dev_token, stack
):
    order, payment, _ = services
    payment.status = 503
    bearer = {"Authorization": f"Bearer {dev_token('alice')}"}
    down = f"http://127.0.0.1:{free_port()}"
    async with client_for(_gateway(keys, dev_secret, order, payment, down)) as client:
        view = (await client.get(f"/api/v1/orders/{uuid.uuid4()}/details", headers=bearer)).json()
    assert sorted(view["missing"]) == ["notifications", "payment"]
    assert view["payment"] is None
    assert view["order"]["upstream"] == "order"


async def test_unknown_order_is_404_and_no_token_401(keys, dev_secret, services, dev_token, stack):
    order, payment, notification = services
    order.status = 404
    bearer = {"Authorization": f"Bearer {dev_token('alice')}"}
    async with client_for(_gateway(keys, dev_secret, order, payment, notification.url)) as client:
        path = f"/api/v1/orders/{uuid.uuid4()}/details"
        assert_problem(await client.get(path, headers=bearer), 404)
        assert_problem(await client.get(path), 401)
