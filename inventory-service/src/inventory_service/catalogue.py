"""The demo catalogue that `make dev` seeds, so that the system can be tried at once."""

from __future__ import annotations

from inventory_service.models import Product

DEMO_PRODUCTS: tuple[tuple[str, str, int, int], ...] = (
    # sku, name, unit price in cents, stock on hand
    ("MUG-BLUE", "Blue enamel mug", 1250, 500),
    ("MUG-RED", "Red enamel mug", 1250, 500),
    ("TEE-M", "Organic cotton tee, M", 2400, 200),
    ("TEE-L", "Organic cotton tee, L", 2400, 200),
    ("BOOK-DDIA", "Designing Data-Intensive Applications", 4599, 50),
    ("LAMP-DESK", "Desk lamp", 3900, 25),
    ("POSTER-LTD", "Limited poster (scarce on purpose)", 1999, 3),
    ("SOLD-OUT", "Always out of stock", 999, 0),
    # Plenty of stock where `make demo` orders, so repeated demos still confirm.
    ("SOCKS", "Wool socks", 900, 1_000_000),
    ("CAP", "Baseball cap", 1900, 1_000_000),
    # Above the sandbox's default decline rule (1,000.00): every order of it is declined.
    ("WATCH-GOLD", "Gold watch", 250_000, 100_000),
)


def demo_products() -> list[Product]:
    return [
        Product(sku=sku, name=name, unit_price=price, currency="EUR", on_hand=stock)
        for sku, name, price, stock in DEMO_PRODUCTS
    ]
