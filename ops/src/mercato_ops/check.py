"""`mercato check`: every invariant of the saga (`docs/architecture.md`), verified from the
four databases, the sandbox's ledger and the mail catcher.

1. every accepted order is CONFIRMED or CANCELLED;
2. per SKU, on_hand = available + reserved + committed, none negative, and the reserved and
   committed totals match the reservations; every reservation agrees with the state
   inventory holds for its order; a confirmed order's stock is committed, a cancelled order
   holds none;
3. an order is charged at the sandbox (captured - refunded) iff it is CONFIRMED, for its
   amount, and a cancelled order keeps no open authorization;
4. every payment row says what the sandbox's ledger says of its order: as much captured and
   charged, an authorization held iff the row is AUTHORIZED, one voided iff it is VOIDED;
5. one stored notification per terminal order, sent, and delivered to the mail catcher.
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


async def _rows(url: str, *queries: str) -> list[list[dict[str, Any]]]:
    """Each query's rows, all read from one snapshot of the database."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            # A busy system must not show a state torn between two queries.
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            results = [await conn.execute(text(query)) for query in queries]
            return [[dict(row._mapping) for row in result] for result in results]
    finally:
        await engine.dispose()


_STOCK_TALLIES = """
SELECT p.sku, p.on_hand, p.reserved, p.committed,
       coalesce(sum(r.quantity) FILTER (WHERE r.status = 'RESERVED'), 0) AS held,
       coalesce(sum(r.quantity) FILTER (WHERE r.status = 'COMMITTED'), 0) AS sold
FROM products p LEFT JOIN reservations r ON r.sku = p.sku
GROUP BY p.sku ORDER BY p.sku
"""
# Reservations whose status is not the one their order's state implies (a REJECTED order
# holds none), or whose order inventory has never heard of.
_MISMATCHED_RESERVATIONS = """
SELECT r.order_id::text AS order_id, r.sku, r.status, o.state
FROM reservations r LEFT JOIN order_outcomes o ON o.order_id = r.order_id
WHERE r.status IS DISTINCT FROM CASE o.state WHEN 'RESERVED' THEN 'RESERVED'
      WHEN 'CONFIRMED' THEN 'COMMITTED' WHEN 'CANCELLED' THEN 'RELEASED' END
ORDER BY r.order_id, r.sku
"""
_ORDERS_WITHOUT_RESERVATIONS = """
SELECT o.order_id::text AS order_id, o.state FROM order_outcomes o
WHERE o.state IN ('RESERVED', 'CONFIRMED')
  AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.order_id = o.order_id)
ORDER BY o.order_id
"""
_RESERVATIONS = "SELECT order_id::text AS order_id, sku, quantity, status FROM reservations"


async def inventory_violations(url: str) -> list[str]:
    """Every broken stock invariant of one inventory database on its own; empty when all hold."""
    tallies, mismatched, empty = await _rows(
        url, _STOCK_TALLIES, _MISMATCHED_RESERVATIONS, _ORDERS_WITHOUT_RESERVATIONS
    )
    return _judge_inventory(tallies, mismatched, empty)


def _judge_inventory(
    tallies: list[dict[str, Any]], mismatched: list[dict[str, Any]], empty: list[dict[str, Any]]
) -> list[str]:
    found: list[str] = []
    for row in tallies:
        subject = f"sku {row['sku']}"
        reserved, committed = row["reserved"], row["committed"]
        available = row["on_hand"] - reserved - committed
        for name, value in (("reserved", reserved), ("committed", committed)):
            if value < 0:
                found.append(f"{subject}: {name} is negative ({value})")
        if available < 0:
            found.append(f"{subject}: available is negative ({available})")
        if row["held"] != reserved:
            found.append(f"{subject}: reserved is {reserved}, RESERVED reservations {row['held']}")
        if row["sold"] != committed:
            found.append(
                f"{subject}: committed is {committed}, COMMITTED reservations {row['sold']}"
            )
    found += [
        f"order {row['order_id']}: {row['sku']} is {row['status']} while the order is "
        f"{row['state'] or 'unknown'}"
        for row in mismatched
    ]
    found += [f"order {row['order_id']}: {row['state']} without reservations" for row in empty]
    return found


async def ledger_entries(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The sandbox's ledger, every order's sums by order id."""
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
    (orders,), (*stock, reservations), (notifications,) = await asyncio.gather(
        _rows(
            settings.order_database_url.get_secret_value(),
            "SELECT id::text AS id, status, amount FROM orders",
        ),
        _rows(
            settings.inventory_database_url.get_secret_value(),
            _STOCK_TALLIES,
            _MISMATCHED_RESERVATIONS,
            _ORDERS_WITHOUT_RESERVATIONS,
            _RESERVATIONS,
        ),
        _rows(
            settings.notification_database_url.get_secret_value(),
            "SELECT order_id::text AS order_id, message_id, sent_at FROM notifications",
        ),
    )
    async with httpx.AsyncClient(base_url=settings.sandbox_url, timeout=10) as sandbox:
        ledger = await ledger_entries(sandbox)
    async with httpx.AsyncClient(base_url=settings.mailcatcher_url, timeout=10) as catcher:
        delivered: dict[str, int] = (await catcher.get("/api/message-ids")).json()

    report = Report()
    _check_orders(report, orders)
    report.violations += _judge_inventory(*stock)
    _check_stock(report, orders, reservations)
    _check_money(report, orders, ledger)
    report.violations += await payment_violations(
        settings.payment_database_url.get_secret_value(), ledger
    )
    _check_notifications(report, orders, notifications, delivered)
    return report


def _check_orders(report: Report, orders: list[dict[str, Any]]) -> None:
    for order in orders:
        report.counts[order["status"]] += 1
        if order["status"] not in ("CONFIRMED", "CANCELLED"):
            report.fail(f"order {order['id']} is still {order['status']}")


def _check_stock(
    report: Report, orders: list[dict[str, Any]], reservations: list[dict[str, Any]]
) -> None:
    by_order: dict[str, set[str]] = {}
    for row in reservations:
        by_order.setdefault(row["order_id"], set()).add(row["status"])
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


async def payment_violations(url: str, ledger: dict[str, dict[str, Any]]) -> list[str]:
    """Payment rows whose money disagrees with the sandbox's ledger, the truth of it."""
    (payments,) = await _rows(
        url, "SELECT order_id::text AS order_id, status, captured, refunded FROM payments"
    )
    found: list[str] = []
    for payment in payments:
        subject = f"payment of order {payment['order_id']}"
        status = payment["status"]
        entry = ledger.get(payment["order_id"], {})
        captured, charged = entry.get("captured", 0), entry.get("charged", 0)
        held, voided = entry.get("held", 0), entry.get("voided", 0)
        if payment["captured"] != captured:
            found.append(
                f"{subject} is {status}, captured {payment['captured']}, "
                f"but the sandbox captured {captured}"
            )
        if payment["captured"] - payment["refunded"] != charged:
            found.append(
                f"{subject} is {status}, charged {payment['captured'] - payment['refunded']}, "
                f"but the sandbox charged {charged}"
            )
        if (status == "AUTHORIZED") != bool(held):
            found.append(f"{subject} is {status} but the sandbox holds {held}")
        if status == "VOIDED" and not voided:
            found.append(f"{subject} is VOIDED but the sandbox voided nothing")
    return found


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
