"""`mercato check`: every invariant of DESIGN.md, verified from the four databases, the
sandbox's ledger and the mail catcher.

1. every accepted order is CONFIRMED or CANCELLED;
2. per SKU, on_hand = available + reserved + committed, none negative, and the reserved and
   committed totals match the reservations; a confirmed order's stock is committed, a
   cancelled order holds none;
3. an order is charged at the sandbox (captured - refunded) iff it is CONFIRMED, for its
   amount, and a cancelled order keeps no open authorization;
4. one stored notification per terminal order, sent, and delivered to the mail catcher.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from mercato_ops.settings import OpsSettings


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    @property
    def ok(self) -> bool:
        return not self.violations


async def _rows(url: str, query: str) -> list[dict[str, Any]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(query))
            return [dict(row._mapping) for row in result]
    finally:
        await engine.dispose()


async def _ledger(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    after = ""
    while True:
        page = (await client.get("/v1/ledger", params={"after": after, "limit": 1000})).json()
        entries |= {item["order_id"]: item for item in page["items"]}
        if not page.get("next_after"):
            return entries
        after = page["next_after"]


async def run_check(settings: OpsSettings) -> Report:
    """Gather everything, then judge; network or database errors propagate."""
    orders, products, reservations, notifications = await asyncio.gather(
        _rows(
            settings.order_database_url.get_secret_value(),
            "SELECT id::text AS id, status, amount FROM orders",
        ),
        _rows(
            settings.inventory_database_url.get_secret_value(),
            "SELECT sku, on_hand, reserved, committed FROM products",
        ),
        _rows(
            settings.inventory_database_url.get_secret_value(),
            "SELECT order_id::text AS order_id, sku, quantity, status FROM reservations",
        ),
        _rows(
            settings.notification_database_url.get_secret_value(),
            "SELECT order_id::text AS order_id, message_id, sent_at FROM notifications",
        ),
    )
    async with httpx.AsyncClient(base_url=settings.sandbox_url, timeout=10) as sandbox:
        ledger = await _ledger(sandbox)
    async with httpx.AsyncClient(base_url=settings.mailcatcher_url, timeout=10) as catcher:
        delivered: dict[str, int] = (await catcher.get("/api/message-ids")).json()

    report = Report()
    _check_orders(report, orders)
    _check_stock(report, orders, products, reservations)
    _check_money(report, orders, ledger)
    _check_notifications(report, orders, notifications, delivered)
    return report


def _check_orders(report: Report, orders: list[dict[str, Any]]) -> None:
    for order in orders:
        report.counts[order["status"]] += 1
        if order["status"] not in ("CONFIRMED", "CANCELLED"):
            report.fail(f"order {order['id']} is still {order['status']}")


def _check_stock(
    report: Report,
    orders: list[dict[str, Any]],
    products: list[dict[str, Any]],
    reservations: list[dict[str, Any]],
) -> None:
    held: Counter[tuple[str, str]] = Counter()
    by_order: dict[str, set[str]] = {}
    for row in reservations:
        held[(row["sku"], row["status"])] += row["quantity"]
        by_order.setdefault(row["order_id"], set()).add(row["status"])
    for product in products:
        sku, on_hand = product["sku"], product["on_hand"]
        reserved, committed = product["reserved"], product["committed"]
        available = on_hand - reserved - committed
        if min(available, reserved, committed) < 0:
            report.fail(f"{sku}: negative stock (available {available}, reserved {reserved})")
        if reserved != held[(sku, "RESERVED")] or committed != held[(sku, "COMMITTED")]:
            report.fail(
                f"{sku}: reserved/committed {reserved}/{committed} but reservations say "
                f"{held[(sku, 'RESERVED')]}/{held[(sku, 'COMMITTED')]}"
            )
    for order in orders:
        states = by_order.get(order["id"], set())
        if order["status"] == "CONFIRMED" and states != {"COMMITTED"}:
            report.fail(f"order {order['id']} is confirmed but its stock is {sorted(states)}")
        if order["status"] == "CANCELLED" and states & {"RESERVED", "COMMITTED"}:
            report.fail(f"order {order['id']} is cancelled but holds stock {sorted(states)}")


def _check_money(
    report: Report, orders: list[dict[str, Any]], ledger: dict[str, dict[str, Any]]
) -> None:
    known = {order["id"] for order in orders}
    for order in orders:
        entry = ledger.get(order["id"], {})
        charged, held = entry.get("charged", 0), entry.get("held", 0)
        if order["status"] == "CONFIRMED" and charged != order["amount"]:
            report.fail(
                f"order {order['id']} is confirmed but charged {charged}, not {order['amount']}"
            )
        if order["status"] != "CONFIRMED" and charged:
            report.fail(f"order {order['id']} is {order['status']} but charged {charged}")
        if order["status"] == "CANCELLED" and held:
            report.fail(f"order {order['id']} is cancelled but {held} stays authorized")
    for order_id, entry in ledger.items():
        if order_id not in known and entry.get("charged"):
            report.fail(f"the sandbox charged {entry['charged']} for unknown order {order_id}")


def _check_notifications(
    report: Report,
    orders: list[dict[str, Any]],
    notifications: list[dict[str, Any]],
    delivered: dict[str, int],
) -> None:
    per_order = Counter(row["order_id"] for row in notifications)
    by_order = {row["order_id"]: row for row in notifications}
    for order in orders:
        stored = per_order[order["id"]]
        if order["status"] in ("CONFIRMED", "CANCELLED") and stored != 1:
            report.fail(f"order {order['id']} has {stored} notifications, not 1")
            continue
        row = by_order.get(order["id"])
        if row is not None and (row["sent_at"] is None or not delivered.get(row["message_id"])):
            report.fail(f"order {order['id']}: notification {row['message_id']} not delivered")
    report.counts["notifications"] = len(notifications)


def print_report(report: Report) -> None:
    """A summary, then every violation."""
    summary = ", ".join(f"{name} {count}" for name, count in sorted(report.counts.items()))
    print(f"checked: {summary or 'no orders'}")  # noqa: T201
    for violation in report.violations[:200]:
        print(f"VIOLATION: {violation}")  # noqa: T201
    if len(report.violations) > 200:
        print(f"... and {len(report.violations) - 200} more")  # noqa: T201
    print("all invariants hold" if report.ok else f"{len(report.violations)} violations")  # noqa: T201
