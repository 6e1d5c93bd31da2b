"""Rate limiting: GCRA in Redis (one atomic call per request) and its response headers."""

from gateway.ratelimit.headers import rate_limit_headers
from gateway.ratelimit.limiter import LocalGcra, OnRedisError, RateLimiter, gcra, redis_client
from gateway.ratelimit.policies import Decision, RatePolicy, Source

__all__ = [
    "Decision",
    "LocalGcra",
    "OnRedisError",
    "RateLimiter",
    "RatePolicy",
    "Source",
    "gcra",
    "rate_limit_headers",
    "redis_client",
]
