"""The public inventory API in-process against a real, migrated Postgres database."""

import pytest

from inventory_service import service
from inventory_service.app import create_app
from inventory_service.catalogue import DEMO_PRODUCTS
from inventory_service.models import Product
from inventory_service.settings import InventorySettings
from mercato_shared.db import create_engine, create_sessionmaker
from tests.apps import assert_problem, client_for


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


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "offset=-1", "limit=x"])
async def test_bad_paging_is_a_422_problem(client, sign, query):
    assert_problem(await client.get(f"/api/v1/products?{query}", headers=sign()), 422)


async def test_identity_is_required(client):
    assert_problem(await client.get("/api/v1/products"), 401)


async def test_not_ready_when_the_database_is_unreachable(keys):
    settings = InventorySettings(
        database_url="postgresql+asyncpg://mercato:mercato@127.0.0.1:1/none",
        identity_public_key_file=keys[1],
    )
    async with client_for(create_app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("failed")
