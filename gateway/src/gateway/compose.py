"""`GET /api/v1/orders/{id}/details`: order, payment and notifications fetched concurrently.

A part whose service is down is reported in ``missing`` instead of failing the whole view;
each service still checks ownership itself, so the view never shows more than its parts.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp

from gateway.asgi import Send, send_problem
from gateway.upstreams import NoInstanceError, UpstreamTable

DETAILS_PATH = "/api/v1/orders/{order_id}/details"
DETAILS = re.compile(r"^/api/v1/orders/(?P<order_id>[^/]+)/details$")


class _Unavailable(Exception):
    pass


async def _get_json(
    session: aiohttp.ClientSession,
    upstreams: UpstreamTable,
    path: str,
    headers: dict[str, str],
) -> tuple[int, Any]:
    upstream = upstreams.match(path.split("?", 1)[0])
    if upstream is None:
        raise _Unavailable(path)
    try:
        instance, permit = upstream.pick(set())
    except NoInstanceError as exc:
        raise _Unavailable(path) from exc
    timeout = aiohttp.ClientTimeout(total=upstream.config.timeout_seconds)
    try:
        async with session.get(instance.url + path, headers=headers, timeout=timeout) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        permit.failure()
        raise _Unavailable(path) from exc
    if response.status >= 500:
        permit.failure()
        raise _Unavailable(path)
    permit.success()
    return response.status, body


async def order_details(
    send: Send,
    *,
    session: aiohttp.ClientSession,
    upstreams: UpstreamTable,
    order_id: str,
    headers: dict[str, str],
    response_headers: list[tuple[bytes, bytes]],
) -> None:
    """Answer the composed view of one order."""
    parts = {
        "order": f"/api/v1/orders/{order_id}",
        "payment": f"/api/v1/payments/{order_id}",
        "notifications": f"/api/v1/notifications?order_id={order_id}",
    }
    results = await asyncio.gather(
        *(_get_json(session, upstreams, path, headers) for path in parts.values()),
        return_exceptions=True,
    )
    view: dict[str, Any] = {"missing": []}
    for name, result in zip(parts, results, strict=True):
        if isinstance(result, BaseException):
            view[name] = None
            view["missing"].append(name)
            continue
        status, body = result
        if name == "order" and status == 404:
            await send_problem(send, 404, f"order {order_id} not found", slug="not-found")
            return
        if name == "order" and status != 200:
            # The order service's own 4xx (a malformed id): the client's mistake, passed on.
            await _send_json(send, status, body, response_headers)
            return
        if status == 200 and name == "notifications":
            view[name] = body.get("items", []) if isinstance(body, dict) else []
        elif status == 200:
            view[name] = body
        else:
            view[name] = [] if name == "notifications" else None
    await _send_json(send, 200, view, response_headers)


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    content_type = b"application/problem+json" if status >= 400 else b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
