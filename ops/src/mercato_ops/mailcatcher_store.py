"""The mail catcher's store: every delivery in memory and appended to a JSON-lines file.

Each SMTP delivery is one record, so a message delivered twice (same Message-ID, as after a
sender's crash between sending and committing) shows up twice and is counted per Message-ID:
an operator check asks "was it delivered at least once", a developer can see the repeat.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Raw bytes that are not UTF-8 survive a round trip through the JSON file this way.
_RAW_ERRORS = "surrogateescape"


@dataclass(frozen=True)
class Delivery:
    """One message as the catcher received it."""

    n: int
    message_id: str | None
    sender: str
    recipients: tuple[str, ...]
    subject: str
    received_at: datetime
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)

    def to_record(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "message_id": self.message_id,
            "from": self.sender,
            "to": list(self.recipients),
            "subject": self.subject,
            "received_at": self.received_at.isoformat(),
            "raw": self.raw.decode("utf-8", _RAW_ERRORS),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Delivery:
        return cls(
            n=int(record["n"]),
            message_id=record.get("message_id"),
            sender=str(record["from"]),
            recipients=tuple(str(to) for to in record["to"]),
            subject=str(record.get("subject", "")),
            received_at=datetime.fromisoformat(record["received_at"]),
            raw=str(record["raw"]).encode("utf-8", _RAW_ERRORS),
        )


def _headers(raw: bytes) -> tuple[str | None, str]:
    """(Message-ID, decoded Subject) of a raw message; a missing header is None / ''.

    compat32 parses the two headers as text, a fraction of the default policy's cost; the
    Subject's encoded words (RFC 2047) are decoded on their own.
    """
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    message_id = headers.get("Message-ID")
    subject = headers.get("Subject")
    return (
        str(message_id).strip() if message_id is not None else None,
        str(make_header(decode_header(str(subject)))) if subject is not None else "",
    )


class MailStore:
    """Deliveries in arrival order, persisted to ``path`` (one JSON object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._deliveries: list[Delivery] = []
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    self._deliveries.append(Delivery.from_record(json.loads(line)))
                except (ValueError, KeyError, TypeError) as exc:
                    # A line cut short by a crash mid-write must not hide the others.
                    log.warning("%s:%d: unreadable record skipped: %s", self.path, number, exc)

    def add(self, *, sender: str, recipients: list[str], raw: bytes) -> Delivery:
        """Record one delivery; it is on disk before the SMTP client hears 250."""
        message_id, subject = _headers(raw)
        delivery = Delivery(
            n=(self._deliveries[-1].n + 1) if self._deliveries else 1,
            message_id=message_id,
            sender=sender,
            recipients=tuple(recipients),
            subject=subject,
            received_at=datetime.now(UTC),
            raw=raw,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(delivery.to_record()) + "\n")
        self._deliveries.append(delivery)
        return delivery

    def deliveries(self, *, to: str | None = None) -> list[Delivery]:
        """Newest first; ``to`` keeps those addressed to that recipient (case-insensitive)."""
        found = reversed(self._deliveries)
        if to is not None:
            wanted = to.casefold()
            found = (d for d in found if wanted in (r.casefold() for r in d.recipients))
        return list(found)

    def get(self, n: int) -> Delivery | None:
        return next((d for d in self._deliveries if d.n == n), None)

    def delivery_counts(self) -> Counter[str]:
        """How many times each Message-ID was delivered."""
        return Counter(d.message_id for d in self._deliveries if d.message_id is not None)

    def clear(self) -> int:
        """Forget every delivery, on disk too; returns how many there were."""
        count = len(self._deliveries)
        self._deliveries.clear()
        if self.path.exists():
            self.path.write_text("", encoding="utf-8")
        return count
