"""A real sandbox on a free port, and the payment worker's handlers driven as the consumer does."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select

from mercato_ops.check import ledger_entries
from mercato_shared import inbox as inbox_records
from mercato_shared.db import transaction
from mercato_shared.embedded import EmbeddedServer
from mercato_shared.events import (
    CancelReason,
    Envelope,
    InventoryReserved,
    OrderCancelled,
    OrderConfirmed,
    PricedLine,
)
from payment_sandbox.app import create_app
from payment_sandbox.settings import SandboxSettings
from payment_service.handlers import build_handlers
from payment_service.models import Payment, inbox, outbox
from payment_service.sandbox import SandboxClient
from tests.infra import eventually, free_port


class Sandbox:
    """payment-sandbox served by uvicorn in this process, with a control client."""

    def __init__(self, database_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = SandboxSettings(port=self.port, database_path=database_path, seed=1)
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.control = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            # Requests hanging on purpose must not hold up the test's teardown.
            timeout_graceful_shutdown=1,
        )
        self._server = EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve())

        async def started() -> bool:
            assert self._task is not None
            if self._task.done():
                self._task.result()
            return self._server is not None and self._server.started

        await eventually(started, within=10)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self.control.aclose()

    async def configure(self, **knobs: object) -> None:
        response = await self.control.put("/v1/_config", json=knobs)
        assert response.status_code == 200, response.text

    async def ledger(self, order_id: uuid.UUID) -> dict[str, Any]:
        response = await self.control.get("/v1/ledger", params={"order_id": str(order_id)})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def entries(self) -> dict[str, dict[str, Any]]:
        """Every order's sums, as `mercato check` reads the ledger."""
        return await ledger_entries(self.control)

    async def authorize_directly(self, order_id: uuid.UUID, amount: int = 2500) -> dict[str, Any]:
        """An authorization under the order's key, as a late retry of payment's would send it."""
        response = await self.control.post(
            "/v1/authorizations",
            json={"order_id": str(order_id), "amount": amount, "currency": "EUR"},
            headers={"Idempotency-Key": f"auth-{order_id}"},
        )
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body


class Saga:
    """The payment handlers, each event delivered in its own inbox transaction."""

    def __init__(self, settings, sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self.sandbox = SandboxClient.from_settings(settings)
        self.handlers = build_handlers(settings, self.sandbox)
        self._offset = 0

    async def deliver(self, envelope: Envelope) -> None:
        """What the shared consumer does with one record: inbox row and handler, one commit."""
        self._offset += 1
        async with transaction(self.sessions) as session:
            delivery = inbox_records.Delivery(
                envelope=envelope, topic="test", partition=0, offset=self._offset
            )
            if await inbox_records.record(session, inbox, [delivery]):
                await self.handlers[envelope.type](session, envelope)

    async def payment(self, order_id: uuid.UUID) -> Payment:
        """The order's payment row, which must exist."""
        async with transaction(self.sessions) as session:
            payment = await session.get(Payment, order_id)
        assert payment is not None, f"no payment row for {order_id}"
        return payment

    async def tamper(self, order_id: uuid.UUID, **changes: Any) -> None:
        """Change the order's payment row behind the saga's back (for the invariant check)."""
        async with transaction(self.sessions) as session:
            payment = await session.get(Payment, order_id)
            assert payment is not None, f"no payment row for {order_id}"
            for name, value in changes.items():
                setattr(payment, name, value)

    async def events(self, order_id: uuid.UUID) -> list[Envelope]:
        """The events the handlers wrote to the outbox for ``order_id``, oldest first."""
        async with transaction(self.sessions) as session:
            rows = await session.execute(
                select(outbox.c.topic, outbox.c.envelope)
                .where(outbox.c.key == str(order_id))
                .order_by(outbox.c.id)
            )
            found = rows.all()
        assert all(row.topic == self.settings.topic("payments") for row in found)
        return [Envelope.model_validate(row.envelope) for row in found]

    async def handled(self, event_id: uuid.UUID) -> bool:
        async with transaction(self.sessions) as session:
            rows = await session.execute(
                select(inbox.c.event_id).where(inbox.c.event_id == event_id)
            )
            return rows.first() is not None


def reserved(order_id: uuid.UUID, amount: int = 2500, customer: str = "alice") -> Envelope:
    lines = [PricedLine(sku="MUG-BLUE", quantity=1, unit_price=amount)]
    payload = InventoryReserved(customer_id=customer, lines=lines, amount=amount, currency="EUR")
    return Envelope.wrap(payload, order_id=order_id)


def confirmed(order_id: uuid.UUID, amount: int = 2500, customer: str = "alice") -> Envelope:
    payload = OrderConfirmed(customer_id=customer, amount=amount, currency="EUR")
    return Envelope.wrap(payload, order_id=order_id)


def cancelled(
    order_id: uuid.UUID,
    reason: CancelReason = CancelReason.CUSTOMER_CANCELLED,
    customer: str = "alice",
) -> Envelope:
    return Envelope.wrap(OrderCancelled(customer_id=customer, reason=reason), order_id=order_id)
