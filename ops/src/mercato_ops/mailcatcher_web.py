"""The mail catcher's HTTP view: a JSON API for checks and tests, and a plain HTML list."""

from __future__ import annotations

from html import escape
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from mercato_ops.mailcatcher_store import Delivery, MailStore
from mercato_shared.problems import NotFoundError, install_problem_handlers
from mercato_shared.tracing import FASTAPI_TELEMETRY

# Long enough for any address RFC 5321 allows; longer is a client bug, not a lookup.
_MAX_ADDRESS = 320

To = Annotated[
    str | None,
    Query(min_length=1, max_length=_MAX_ADDRESS, description="only mail to this address"),
]


def _summary(delivery: Delivery, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "n": delivery.n,
        "message_id": delivery.message_id,
        "from": delivery.sender,
        "to": list(delivery.recipients),
        "subject": delivery.subject,
        "received_at": delivery.received_at.isoformat(),
        "size": delivery.size,
        "deliveries": counts.get(delivery.message_id, 1) if delivery.message_id else 1,
    }


def _page(deliveries: list[Delivery], counts: dict[str, int]) -> str:
    # Every value comes from whoever sent the mail: all of it is escaped.
    rows = "\n".join(
        "<tr>"
        f'<td><a href="/api/messages/{d.n}">{d.n}</a></td>'
        f"<td>{escape(d.received_at.isoformat(timespec='seconds'))}</td>"
        f"<td>{escape(d.sender)}</td>"
        f"<td>{escape(', '.join(d.recipients))}</td>"
        f"<td>{escape(d.subject)}</td>"
        f"<td>{escape(d.message_id or '')}</td>"
        f"<td>{counts.get(d.message_id, 1) if d.message_id else 1}</td>"
        "</tr>"
        for d in deliveries
    )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>Mercato mail catcher</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style>"
        "</head><body>\n"
        f"<h1>Mercato mail catcher</h1><p>{len(deliveries)} message(s), newest first.</p>\n"
        "<table><tr><th>#</th><th>received</th><th>from</th><th>to</th><th>subject</th>"
        f"<th>Message-ID</th><th>deliveries</th></tr>\n{rows}\n</table></body></html>\n"
    )


def create_web_app(store: MailStore) -> FastAPI:
    """The catcher's HTTP API over ``store``."""
    app = FastAPI(title="Mercato mail catcher", version="0.1.0", telemetry=FASTAPI_TELEMETRY)
    install_problem_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def index(to: To = None) -> HTMLResponse:
        """Every message as an HTML table, newest first."""
        return HTMLResponse(_page(store.deliveries(to=to), store.delivery_counts()))

    @app.get("/api/messages")
    async def list_messages(to: To = None) -> list[dict[str, Any]]:
        """Every delivery, newest first, with how often its Message-ID was delivered."""
        counts = store.delivery_counts()
        return [_summary(d, counts) for d in store.deliveries(to=to)]

    @app.get("/api/message-ids")
    async def message_ids() -> dict[str, int]:
        """Each Message-ID seen, with its number of deliveries."""
        return dict(store.delivery_counts())

    @app.get("/api/messages/{n}")
    async def raw_message(n: int) -> Response:
        """The n-th delivery as the sender transmitted it."""
        delivery = store.get(n)
        if delivery is None:
            raise NotFoundError(f"no message number {n}")
        # The content is whatever a sender wrote: no browser may sniff it into HTML.
        return Response(
            delivery.raw,
            media_type="text/plain; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    @app.delete("/api/messages")
    async def clear() -> dict[str, int]:
        """Forget every message (in memory and on disk)."""
        return {"deleted": store.clear()}

    return app
