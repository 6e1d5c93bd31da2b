"""The inventory API in-process against a real, migrated Postgres database: the public
catalogue, and the admin routes that set stock and list a SKU's reservations."""

import json
import re

import pytest

from inventory_service import service
from inventory_service.app import create_app
from inventory_service.catalogue import DEMO_PRODUCTS
from inventory_service.models import Product
from inventory_service.settings import InventorySettings
from mercato_shared.db import create_engine, create_sessionmaker
from mercato_shared.identity import Role
from tests.apps import assert_problem, client_for
from tests.inventory_service.support import cancelled, confirmed, created


async def test_lists_the_catalogue_by_sku_with_pagination(client, seeded, sign):
    first = (await client.get("/api/v1/products?limit=3", headers=sign())).json()
    rest = (await client.get("/api/v1/products?limit=50&offset=3", headers=sign())).json()
    skus = [p["sku"] for p in first["items"] + rest["items"]]
    assert skus == sorted(sku for sku, *_ in DEMO_PRODUCTS)
    assert first["total"] == len(DEMO_PRODUCTS)
    assert len(first["items"]) == 3


async def test_reads_one_product_with_available_stock(client, seeded, sign):
    body = (await client.get("/api/v1/products/MUG-BLUE", headers=sign())).json()
    assert body == {
        "sku": "MUG-BLUE",
        "name": "Blue enamel mug",
        "unit_price": 1250,
        "currency": "EUR",
        "available": 500,
    }
    assert_problem(await client.get("/api/v1/products/NOPE", headers=sign()), 404)


async def test_reseeding_keeps_stock_and_updates_names(settings, seeded, client, sign):
    engine = create_engine(settings)
    try:
        renamed = Product(sku="MUG-BLUE", name="Mug", unit_price=1300, currency="EUR", on_hand=1)
        await service.seed_catalogue(sessions=create_sessionmaker(engine), products=[renamed])
    finally:
        await engine.dispose()
    body = (await client.get("/api/v1/products/MUG-BLUE", headers=sign())).json()
    assert (body["name"], body["unit_price"], body["available"]) == ("Mug", 1300, 500)


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "offset=-1", "limit=x", "offset=18446744073709551617"]
)
async def test_bad_paging_is_a_422_problem(client, sign, query):
    assert_problem(await client.get(f"/api/v1/products?{query}", headers=sign()), 422)


async def test_the_largest_offset_postgres_holds_is_an_empty_page(client, seeded, sign):
    page = await client.get(f"/api/v1/products?offset={2**63 - 1}", headers=sign())
    assert page.status_code == 200, page.text
    assert page.json()["items"] == []


async def test_identity_is_required(client):
    assert_problem(await client.get("/api/v1/products"), 401)


async def test_not_ready_when_the_database_is_unreachable(keys):
    settings = InventorySettings(
        database_url="postgresql+asyncpg://mercato:mercato@127.0.0.1:1/none",
        identity_public_keys=keys[1],
    )
    async with client_for(create_app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("failed")


STOCK = "/api/v1/products/MUG-BLUE/stock"


@pytest.fixture
def admin(sign):
    return sign("root", Role.ADMIN)


async def test_admin_sets_stock_on_hand(client, seeded, admin, sign):
    response = await client.put(STOCK, json={"on_hand": 120}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sku": "MUG-BLUE",
        "on_hand": 120,
        "reserved": 0,
        "committed": 0,
        "available": 120,
    }
    assert await seeded.stock("MUG-BLUE") == (120, 0, 0)
    public = (await client.get("/api/v1/products/MUG-BLUE", headers=sign())).json()
    assert public["available"] == 120
    # Zero is a valid count: the product stays listed, out of stock.
    assert (await client.put(STOCK, json={"on_hand": 0}, headers=admin)).json()["available"] == 0
    # JSON Schema's integer includes 7.0, and so does the API.
    assert (await client.put(STOCK, json={"on_hand": 7.0}, headers=admin)).json()["on_hand"] == 7


async def test_stock_cannot_drop_below_reserved_plus_committed(client, seeded, admin):
    sold, held = created(("MUG-BLUE", 1)), created(("MUG-BLUE", 2))
    for event in (sold, confirmed(sold.order_id), held):
        await seeded.handle(event)

    body = assert_problem(await client.put(STOCK, json={"on_hand": 2}, headers=admin), 409)
    assert (body["reserved"], body["committed"], body["minimum_on_hand"]) == (2, 1, 3)
    assert await seeded.stock("MUG-BLUE") == (500, 2, 1)

    response = await client.put(STOCK, json={"on_hand": 3}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["available"] == 0
    assert await seeded.violations() == []


async def test_customers_may_not_set_stock(client, seeded, sign):
    assert_problem(await client.put(STOCK, json={"on_hand": 1}, headers=sign("alice")), 403)
    # The role is checked before the body: a customer learns nothing from validation errors.
    assert_problem(await client.put(STOCK, json={"on_hand": -1}, headers=sign("alice")), 403)
    assert_problem(await client.put(STOCK, json={"on_hand": 1}), 401)
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)


async def test_unknown_sku_is_a_404_problem(client, seeded, admin):
    assert_problem(
        await client.put("/api/v1/products/NOPE/stock", json={"on_hand": 1}, headers=admin), 404
    )
    assert_problem(await client.get("/api/v1/products/NOPE/reservations", headers=admin), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"on_hand": -1},
        {"on_hand": "5"},
        {"on_hand": 5.5},
        {"on_hand": True},
        {"on_hand": None},
        {"on_hand": 2**31},
        {},
        {"on_hand": 5, "reserved": 0},
        [5],
    ],
    ids=lambda body: json.dumps(body),
)
async def test_bad_stock_bodies_are_422_problems_and_change_nothing(client, seeded, admin, body):
    assert_problem(await client.put(STOCK, json=body, headers=admin), 422)
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)


async def test_malformed_json_is_a_400_problem(client, seeded, admin):
    headers = {**admin, "content-type": "application/json"}
    assert_problem(await client.put(STOCK, content=b'{"on_hand": ', headers=headers), 400)
    assert await seeded.stock("MUG-BLUE") == (500, 0, 0)


async def test_admin_lists_reservations_newest_first(client, seeded, admin):
    orders = [created(("MUG-BLUE", n)) for n in (1, 2, 3)]
    for event in orders:
        await seeded.handle(event)
    await seeded.handle(created(("TEE-M", 1)))  # another SKU's: not listed
    await seeded.handle(cancelled(orders[0].order_id))

    path = "/api/v1/products/MUG-BLUE/reservations"
    page = (await client.get(f"{path}?limit=2", headers=admin)).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [item["order_id"] for item in page["items"]] == [
        str(orders[2].order_id),
        str(orders[1].order_id),
    ]
    assert page["items"][0]["quantity"] == 3
    assert page["items"][0]["unit_price"] == 1250
    assert page["items"][0]["status"] == "RESERVED"
    rest = (await client.get(f"{path}?limit=2&offset=2", headers=admin)).json()
    assert [(i["order_id"], i["status"]) for i in rest["items"]] == [
        (str(orders[0].order_id), "RELEASED")
    ]

    released = (await client.get(f"{path}?status=RELEASED", headers=admin)).json()
    assert released["total"] == 1
    assert [i["order_id"] for i in released["items"]] == [str(orders[0].order_id)]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "offset=-1", "status=LOST", "offset=18446744073709551617"]
)
async def test_bad_reservation_queries_are_422_problems(client, seeded, admin, query):
    path = f"/api/v1/products/MUG-BLUE/reservations?{query}"
    assert_problem(await client.get(path, headers=admin), 422)


async def test_customers_may_not_list_reservations(client, seeded, sign):
    path = "/api/v1/products/MUG-BLUE/reservations"
    assert_problem(await client.get(path, headers=sign("alice")), 403)
    assert_problem(await client.get(path), 401)


async def test_openapi_documents_the_admin_routes(client):
    spec = (await client.get("/openapi.json")).json()
    put = spec["paths"]["/api/v1/products/{sku}/stock"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StockUpdate"
    )
    assert put["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StockRead"
    )
    assert {"403", "404", "409", "422"} <= put["responses"].keys()
    conflict = put["responses"]["409"]["content"]["application/problem+json"]["schema"]
    assert conflict["$ref"] == "#/components/schemas/Problem"
    assert spec["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
    listing = spec["paths"]["/api/v1/products/{sku}/reservations"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ReservationPage"
    )
    assert spec["components"]["schemas"]["StockUpdate"]["additionalProperties"] is False


@pytest.mark.parametrize("path", ["/api/v1/products?limit=3", "/api/v1/products/MUG-BLUE"])
async def test_catalogue_answers_carry_an_etag_and_a_matching_if_none_match_is_a_304(
    client, seeded, sign, path
):
    first = await client.get(path, headers=sign())
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["cache-control"] == "public, max-age=5, stale-if-error=60"
    assert (await client.get(path, headers=sign())).headers["etag"] == etag  # deterministic

    for held in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
        again = await client.get(path, headers=sign() | {"If-None-Match": held})
        assert again.status_code == 304, held
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    other = await client.get(path, headers=sign() | {"If-None-Match": '"other", W/"x"'})
    assert other.status_code == 200
    assert other.json() == first.json()


async def test_the_etag_changes_with_the_stock(client, seeded, sign):
    path = "/api/v1/products/MUG-BLUE"
    etag = (await client.get(path, headers=sign())).headers["etag"]
    admin = sign("root", Role.ADMIN)
    assert (await client.put(STOCK, json={"on_hand": 7}, headers=admin)).status_code == 200
    changed = await client.get(path, headers=sign() | {"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["available"] == 7
    assert changed.headers["etag"] != etag


async def test_catalogue_cache_control_comes_from_the_settings(settings, seeded, sign):
    tuned = settings.model_copy(
        update={"catalogue_max_age_seconds": 30, "catalogue_stale_if_error_seconds": 0}
    )
    async with client_for(create_app(tuned)) as client:
        answer = await client.get("/api/v1/products", headers=sign())
    assert answer.headers["cache-control"] == "public, max-age=30, stale-if-error=0"


async def test_the_openapi_document_describes_etags_and_the_304(client):
    document = (await client.get("/openapi.json")).json()
    for path in ["/api/v1/products", "/api/v1/products/{sku}"]:
        operation = document["paths"][path]["get"]
        assert {"ETag", "Cache-Control"} <= operation["responses"]["200"]["headers"].keys()
        assert "304" in operation["responses"]
        assert "if-none-match" in {p["name"].lower() for p in operation["parameters"]}
