"""Console scripts: inventory-api, inventory-worker, inventory-migrate [--seed-demo]."""

import argparse
import asyncio

from inventory_service import service
from inventory_service.app import create_app
from inventory_service.catalogue import demo_products
from inventory_service.settings import InventorySettings
from inventory_service.worker import build_spec
from mercato_shared import api as shared_api
from mercato_shared import migrations
from mercato_shared import worker as shared_worker
from mercato_shared.db import create_engine, create_sessionmaker


def api() -> None:
    settings = InventorySettings()
    shared_api.serve(create_app(settings), settings)


def worker() -> None:
    shared_worker.main(build_spec())


async def _seed(settings: InventorySettings) -> None:
    engine = create_engine(settings)
    try:
        await service.seed_catalogue(sessions=create_sessionmaker(engine), products=demo_products())
    finally:
        await engine.dispose()


def migrate() -> None:
    parser = argparse.ArgumentParser(prog="inventory-migrate")
    parser.add_argument(
        "--seed-demo", action="store_true", help="also add the demo catalogue (dev only)"
    )
    args = parser.parse_args()
    settings = InventorySettings()
    migrations.migrate_command("inventory_service", settings)
    if args.seed_demo:
        asyncio.run(_seed(settings))
