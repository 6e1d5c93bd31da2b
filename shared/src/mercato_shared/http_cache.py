"""HTTP caching for public reads: strong entity tags, If-None-Match and 304 (RFC 9110, 9111).

The services tag a cacheable answer with a hash of its body; the gateway's cache compares
a client's If-None-Match with the tag it stored using the same function, ``none_match``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fastapi import Response
from pydantic import BaseModel

# An entity-tag of an If-None-Match list (RFC 9110 section 8.8.3): an opaque tag may hold a
# comma, so the list is scanned for quoted tags rather than split on commas.
_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')

# The headers a 304 repeats from the 200 it stands for (RFC 9110 section 15.4.5).
NOT_MODIFIED_HEADERS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary"}
)


def strong_etag(body: bytes) -> str:
    """A strong entity tag for ``body``: 128 bits of its BLAKE2b digest, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def none_match(if_none_match: str | None, etag: str | None) -> bool:
    """Whether If-None-Match is ``*`` or lists ``etag``, compared weakly: answer 304."""
    if not if_none_match or etag is None:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = _ENTITY_TAG.fullmatch(etag)
    if wanted is None:
        return False
    return wanted.group(1) in _ENTITY_TAG.findall(if_none_match)


def cache_control(*, max_age: int, stale_if_error: int) -> str:
    """The Cache-Control of a public answer (RFC 9111, and RFC 5861 for stale-if-error)."""
    return f"public, max-age={max_age}, stale-if-error={stale_if_error}"


def cacheable_json(body: BaseModel, *, if_none_match: str | None, cache_control: str) -> Response:
    """``body`` as JSON with its ETag and Cache-Control, or a 304 when the client has it."""
    content = body.model_dump_json().encode()
    etag = strong_etag(content)
    headers = {"etag": etag, "cache-control": cache_control}
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(content=content, media_type="application/json", headers=headers)


_HEADERS: dict[str, Any] = {
    "ETag": {
        "description": "a strong entity tag of the body; send it back in If-None-Match",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "how long shared and private caches may keep the answer",
        "schema": {"type": "string", "example": "public, max-age=5, stale-if-error=60"},
    },
}

# OpenAPI entries for a cacheable GET route: its 200's headers, and the 304 without a body.
CACHEABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": _HEADERS},
    304: {
        "description": "Not Modified: If-None-Match named the current ETag (or was *); no body",
        "headers": _HEADERS,
    },
}
