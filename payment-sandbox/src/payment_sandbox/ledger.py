"""The sandbox's ledger in SQLite: the source of truth for what each order was charged.

Every operation is one short write transaction run on the event loop's thread. sqlite3 blocks,
but in WAL mode with synchronous=NORMAL a commit appends to the log without an fsync (it
survives a crash of the process, not of the machine, which suits a simulator), so calls take
well under a millisecond. Running them without an await in between makes each operation atomic
with respect to the others in this process; BEGIN IMMEDIATE covers other processes.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mercato_shared.problems import ConflictError, NotFoundError
from payment_sandbox.errors import IdempotencyKeyReusedError
from payment_sandbox.schemas import (
    AuthorizationCreate,
    AuthorizationRead,
    AuthorizationStatus,
    KeyVoidRead,
    LedgerEntry,
    OrderLedger,
    RefundRead,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS authorizations (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('authorized', 'declined', 'captured', 'voided')),
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    decline_reason TEXT,
    captured INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    CHECK (captured IN (0, amount) AND refunded BETWEEN 0 AND captured)
);
CREATE INDEX IF NOT EXISTS ix_authorizations_order_id ON authorizations (order_id);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    authorization_id TEXT NOT NULL REFERENCES authorizations (id),
    amount INTEGER NOT NULL CHECK (amount > 0),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS voided_keys (
    idempotency_key TEXT PRIMARY KEY,
    voided_at TEXT NOT NULL
);
"""

_SUMMARY = """
SELECT order_id,
       MIN(currency) AS currency,
       COUNT(*) AS authorization_count,
       SUM(status = 'declined') AS declined_count,
       SUM(CASE WHEN status != 'declined' THEN amount ELSE 0 END) AS authorized,
       SUM(CASE WHEN status = 'authorized' THEN amount ELSE 0 END) AS held,
       SUM(captured) AS captured,
       SUM(CASE WHEN status = 'voided' THEN amount ELSE 0 END) AS voided,
       SUM(refunded) AS refunded,
       SUM(captured) - SUM(refunded) AS charged
FROM authorizations
"""

KEY_VOIDED = "idempotency_key_voided"

# Decides an authorization's fate: None approves it, a string is the decline reason.
Decider = Callable[[int], str | None]


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Ledger:
    """Authorizations, refunds and voided keys in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE) below.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _one(self, sql: str, *params: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
        return row

    def _authorization(self, authorization_id: str) -> AuthorizationRead:
        row = self._one("SELECT * FROM authorizations WHERE id = ?", authorization_id)
        if row is None:
            raise NotFoundError(f"no authorization {authorization_id}")
        return AuthorizationRead.model_validate(dict(row))

    def get(self, authorization_id: str) -> AuthorizationRead:
        """One authorization, or 404."""
        return self._authorization(authorization_id)

    def authorize(
        self, key: str, request: AuthorizationCreate, decide: Decider
    ) -> tuple[AuthorizationRead, bool]:
        """Approve or decline once per key; returns the authorization and whether it is new."""
        with self._write() as db:
            row = self._one("SELECT * FROM authorizations WHERE idempotency_key = ?", key)
            if row is not None:
                existing = AuthorizationRead.model_validate(dict(row))
                same = (existing.order_id, existing.amount, existing.currency) == (
                    request.order_id,
                    request.amount,
                    request.currency,
                )
                if not same:
                    raise IdempotencyKeyReusedError(
                        f"idempotency key {key!r} was used for a different authorization"
                    )
                return existing, False
            # A key its owner gave up on: the request was still in flight. Refuse it for good.
            if self._one("SELECT 1 FROM voided_keys WHERE idempotency_key = ?", key) is not None:
                reason: str | None = KEY_VOIDED
            else:
                reason = decide(request.amount)
            status = AuthorizationStatus.DECLINED if reason else AuthorizationStatus.AUTHORIZED
            now, authorization_id = _now(), f"auth_{uuid.uuid4().hex}"
            db.execute(
                "INSERT INTO authorizations (id, idempotency_key, order_id, status, amount,"
                " currency, decline_reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    authorization_id,
                    key,
                    request.order_id,
                    status.value,
                    request.amount,
                    request.currency,
                    reason,
                    now,
                    now,
                ),
            )
            return self._authorization(authorization_id), True

    def capture(self, authorization_id: str) -> AuthorizationRead:
        """Capture the full amount; capturing a captured authorization changes nothing."""
        with self._write() as db:
            auth = self._authorization(authorization_id)
            if auth.status is AuthorizationStatus.CAPTURED:
                return auth
            if auth.status is not AuthorizationStatus.AUTHORIZED:
                raise ConflictError(f"cannot capture a {auth.status} authorization")
            db.execute(
                "UPDATE authorizations SET status = 'captured', captured = amount,"
                " updated_at = ? WHERE id = ?",
                (_now(), authorization_id),
            )
            return self._authorization(authorization_id)

    def void(self, authorization_id: str) -> AuthorizationRead:
        """Release the hold; voiding a voided authorization changes nothing."""
        with self._write():
            return self._void(self._authorization(authorization_id))

    def _void(self, auth: AuthorizationRead) -> AuthorizationRead:
        if auth.status is AuthorizationStatus.VOIDED:
            return auth
        if auth.status is not AuthorizationStatus.AUTHORIZED:
            raise ConflictError(f"cannot void a {auth.status} authorization")
        self._db.execute(
            "UPDATE authorizations SET status = 'voided', updated_at = ? WHERE id = ?",
            (_now(), auth.id),
        )
        return self._authorization(auth.id)

    def refund(self, authorization_id: str, key: str, amount: int) -> tuple[RefundRead, bool]:
        """Give back part or all of a capture, once per key; returns the refund and if new."""
        with self._write() as db:
            row = self._one("SELECT * FROM refunds WHERE idempotency_key = ?", key)
            if row is not None:
                if (row["authorization_id"], row["amount"]) != (authorization_id, amount):
                    raise IdempotencyKeyReusedError(
                        f"idempotency key {key!r} was used for a different refund"
                    )
                return self._refund(row["id"]), False
            auth = self._authorization(authorization_id)
            if auth.status is not AuthorizationStatus.CAPTURED:
                raise ConflictError(f"cannot refund a {auth.status} authorization")
            if amount > auth.captured - auth.refunded:
                raise ConflictError(
                    f"refund of {amount} exceeds the {auth.captured - auth.refunded} refundable"
                )
            refund_id = f"rf_{uuid.uuid4().hex}"
            db.execute(
                "INSERT INTO refunds (id, idempotency_key, authorization_id, amount, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (refund_id, key, authorization_id, amount, _now()),
            )
            db.execute(
                "UPDATE authorizations SET refunded = refunded + ?, updated_at = ? WHERE id = ?",
                (amount, _now(), authorization_id),
            )
            return self._refund(refund_id), True

    def _refund(self, refund_id: str) -> RefundRead:
        row = self._one(
            "SELECT r.*, a.order_id, a.currency FROM refunds r"
            " JOIN authorizations a ON a.id = r.authorization_id WHERE r.id = ?",
            refund_id,
        )
        assert row is not None  # noqa: S101 - read back in the transaction that wrote it
        return RefundRead.model_validate(dict(row))

    def void_key(self, key: str) -> KeyVoidRead:
        """Void what was authorized under ``key``, and refuse any later authorization with it."""
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO voided_keys (idempotency_key, voided_at) VALUES (?, ?)",
                (key, _now()),
            )
            row = self._one("SELECT * FROM authorizations WHERE idempotency_key = ?", key)
            auth = None if row is None else AuthorizationRead.model_validate(dict(row))
            # A declined authorization holds nothing; a captured one must be refunded instead.
            if auth is not None and auth.status is not AuthorizationStatus.DECLINED:
                auth = self._void(auth)
            voided = self._one("SELECT voided_at FROM voided_keys WHERE idempotency_key = ?", key)
            assert voided is not None  # noqa: S101 - inserted above
            return KeyVoidRead(
                idempotency_key=key, voided_at=voided["voided_at"], authorization=auth
            )

    def order(self, order_id: str) -> OrderLedger:
        """One order's sums and authorizations; zeros for an order the sandbox never saw."""
        row = self._one(_SUMMARY + " WHERE order_id = ? GROUP BY order_id", order_id)
        rows = self._db.execute(
            "SELECT * FROM authorizations WHERE order_id = ? ORDER BY created_at, id", (order_id,)
        ).fetchall()
        authorizations = [AuthorizationRead.model_validate(dict(r)) for r in rows]
        if row is None:
            empty = dict.fromkeys(LedgerEntry.model_fields, 0)
            return OrderLedger.model_validate(
                {**empty, "order_id": order_id, "currency": None, "authorizations": []}
            )
        return OrderLedger.model_validate({**dict(row), "authorizations": authorizations})

    def orders(self, *, after: str, limit: int) -> list[LedgerEntry]:
        """Every order's sums, by order id, ``limit`` at a time after ``after``."""
        rows = self._db.execute(
            _SUMMARY + " WHERE order_id > ? GROUP BY order_id ORDER BY order_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [LedgerEntry.model_validate(dict(row)) for row in rows]
