"""Response headers per draft-ietf-httpapi-ratelimit-headers, in ASGI form."""

from __future__ import annotations

import math

from gateway.ratelimit.policies import Decision

Header = tuple[bytes, bytes]


def rate_limit_headers(*decisions: Decision) -> list[Header]:
    """RateLimit-Policy, RateLimit and, when refused, Retry-After for one or more policies."""
    if not decisions:
        return []
    policies = ", ".join(
        f'"{d.policy.name}";q={d.policy.quota};w={d.policy.window_seconds}' for d in decisions
    )
    # A decision nobody measured (failing open or closed) has no remaining count to report.
    measured = ", ".join(
        f'"{d.policy.name}";r={d.remaining};t={math.ceil(d.reset_after)}'
        for d in decisions
        if d.source != "none"
    )
    # ASGI wants lower-case header names; HTTP names are case-insensitive.
    headers = [(b"ratelimit-policy", policies.encode("ascii"))]
    if measured:
        headers.append((b"ratelimit", measured.encode("ascii")))
    refused = [d.retry_after for d in decisions if not d.allowed]
    if refused:
        # Whole seconds, and never 0: "retry after 0 s" invites an immediate hammering.
        retry_after = max(1, math.ceil(max(refused)))
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    return headers
