"""Gateway settings: every knob is a GATEWAY_* environment variable (JSON for lists)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.ratelimit.policies import RatePolicy
from mercato_shared.identity import Role
from mercato_shared.settings import DEV_STATE_DIR, SECRETS_DIR, Environment

DEV_ISSUER = "mercato-dev"
DEV_AUDIENCE = "mercato"
DEV_TOKEN_SECRET_FILE = DEV_STATE_DIR / "keys" / "dev-token-secret"

Algorithm = Literal["HS256", "RS256", "ES256"]


class IssuerConfig(BaseModel):
    """An identity provider whose tokens the gateway accepts."""

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(min_length=1)
    # Per-issuer allow-list: a token's own `alg` header never chooses the verification method.
    algorithms: list[Algorithm] = Field(min_length=1)
    hs256_secret: SecretStr | None = None
    hs256_secret_file: Path | None = None
    jwks_url: HttpUrl | None = None
    jwks_cache_seconds: float = Field(default=300, gt=0)
    jwks_min_refetch_seconds: float = Field(default=30, ge=0)
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    roles_claim: str = "roles"
    # Seconds a verified token's identity is reused without verifying it again (0: verify
    # every request). Never past the token's exp; no longer than keys are cached anyway.
    # Verifying an ES256 token costs about 0.2 ms of CPU, a third of a forwarded request's.
    verified_cache_seconds: float = Field(default=30, ge=0, le=60)

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> IssuerConfig:
        if "HS256" in self.algorithms and not (self.hs256_secret or self.hs256_secret_file):
            raise ValueError(f"issuer {self.issuer}: HS256 needs hs256_secret or its file")
        if {"RS256", "ES256"} & set(self.algorithms) and self.jwks_url is None:
            raise ValueError(f"issuer {self.issuer}: RS256/ES256 need jwks_url")
        if self.jwks_url is not None and self.verified_cache_seconds > self.jwks_cache_seconds:
            raise ValueError(
                f"issuer {self.issuer}: verified_cache_seconds above jwks_cache_seconds"
            )
        return self


class AccessRule(BaseModel):
    """Who may call a path: public, or any of ``roles``. The first matching rule decides."""

    path: str = Field(pattern=r"^/", examples=["/api/v1/products/{sku}/stock", "/api/v1/orders/**"])
    methods: list[str] = Field(default_factory=lambda: ["*"])
    public: bool = False
    roles: list[Role] = Field(default_factory=lambda: [Role.CUSTOMER, Role.ADMIN])


class HealthCheckConfig(BaseModel):
    path: str = "/healthz"
    interval_seconds: float = Field(default=5.0, gt=0)
    timeout_seconds: float = Field(default=1.0, gt=0)
    unhealthy_after: int = Field(default=2, ge=1)
    healthy_after: int = Field(default=2, ge=1)


class BreakerSettings(BaseModel):
    window_size: int = Field(default=20, ge=1)
    minimum_calls: int = Field(default=10, ge=1)
    failure_rate_threshold: float = Field(default=50, gt=0, le=100)
    slow_call_rate_threshold: float = Field(default=100, gt=0, le=100)
    slow_call_seconds: float = Field(default=2.0, gt=0)
    open_seconds: float = Field(default=10.0, gt=0)
    half_open_probes: int = Field(default=3, ge=1)


class CacheConfig(BaseModel):
    """The route's cache of public GET and HEAD answers (docs/gateway.md, "Caching")."""

    # The longest an answer is fresh; the upstream's max-age (or s-maxage) may shorten it.
    ttl_seconds: float = Field(default=5.0, gt=0)
    # How long past freshness an entry may answer while the upstream fails; the upstream's
    # stale-if-error may shorten it.
    stale_if_error_seconds: float = Field(default=60.0, ge=0)
    max_entries: int = Field(default=1024, ge=1)
    # Larger answers pass through unstored; entries times this bounds the cache's memory.
    max_body_bytes: int = Field(default=65_536, ge=0)


class RouteConfig(BaseModel):
    """A path prefix and the instances of the upstream that serves it."""

    prefix: str = Field(pattern=r"^/")
    upstreams: list[HttpUrl] = Field(min_length=1)
    timeout_seconds: float = Field(default=10.0, gt=0)
    balancer: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    # Name of a rate policy for this route; None: "user" when authenticated, else "anonymous".
    rate_limit: str | None = None
    # False exempts the route from rate limiting (no Redis call, no RateLimit headers), for
    # routes whose upstream limits its callers itself.
    rate_limited: bool = True
    max_concurrent: int = Field(default=256, ge=1)
    max_retries: int = Field(default=2, ge=0, le=5)
    health_check: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    # None: nothing of this route is cached.
    cache: CacheConfig | None = None


def _default_routes() -> list[RouteConfig]:
    # The route table of docs/architecture.md on the loopback ports of the native stack.
    return [
        RouteConfig(
            prefix="/api/v1/products",
            upstreams=[HttpUrl("http://127.0.0.1:8002")],
            cache=CacheConfig(),
        ),
        RouteConfig(prefix="/api/v1/orders", upstreams=[HttpUrl("http://127.0.0.1:8001")]),
        RouteConfig(prefix="/api/v1/payments", upstreams=[HttpUrl("http://127.0.0.1:8003")]),
        RouteConfig(prefix="/api/v1/notifications", upstreams=[HttpUrl("http://127.0.0.1:8004")]),
    ]


def _default_access() -> list[AccessRule]:
    admin = [Role.ADMIN]
    return [
        AccessRule(path="/api/v1/products", methods=["GET", "HEAD"], public=True),
        AccessRule(path="/api/v1/products/{sku}", methods=["GET", "HEAD"], public=True),
        AccessRule(path="/api/v1/products/**", roles=admin),
        AccessRule(path="/api/v1/orders/**"),
        AccessRule(path="/api/v1/payments/**"),
        AccessRule(path="/api/v1/notifications/**"),
    ]


def _default_issuers() -> list[IssuerConfig]:
    return [
        IssuerConfig(
            issuer=DEV_ISSUER,
            audiences=[DEV_AUDIENCE],
            algorithms=["HS256"],
            hs256_secret_file=DEV_TOKEN_SECRET_FILE,
        )
    ]


def _default_rate_policies() -> list[RatePolicy]:
    return [
        RatePolicy(name="user", quota=300, window_seconds=60),
        RatePolicy(name="anonymous", quota=60, window_seconds=60),
    ]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        extra="ignore",
        secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
    )

    environment: Environment = Environment.DEV
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8080
    # Serving processes behind the port, each with its own event loop, caches and limits
    # (docs/gateway.md, "Processes").
    workers: int = Field(default=1, ge=1, le=64)

    routes: list[RouteConfig] = Field(default_factory=_default_routes)
    access: list[AccessRule] = Field(default_factory=_default_access)
    auth_issuers: list[IssuerConfig] = Field(default_factory=_default_issuers)
    max_body_bytes: int = Field(default=1_048_576, ge=0)
    upstream_connections: int = Field(default=512, ge=1)

    # HTTP limits, refused before routing (docs/gateway.md, "HTTP limits"). Header sizes count
    # a header's name and value.
    max_url_bytes: int = Field(default=8192, ge=64)
    max_header_bytes: int = Field(default=8192, ge=64)
    max_headers_bytes: int = Field(default=32_768, ge=64)
    max_headers: int = Field(default=100, ge=1)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    # 0 turns the rate check off; the grace lets a slow start (TCP, a phone) catch up.
    min_body_bytes_per_second: int = Field(default=240, ge=0)
    body_rate_grace_seconds: float = Field(default=5.0, ge=0)
    keep_alive_timeout_seconds: int = Field(default=75, ge=1)
    max_connections: int = Field(default=1024, ge=1)
    # An upstream's answer past these is a 502: a status line or one header's value, and
    # the number of headers.
    upstream_max_header_bytes: int = Field(default=8192, ge=64)
    upstream_max_headers: int = Field(default=100, ge=1)

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_timeout_seconds: float = Field(default=0.1, gt=0)
    # Lets several gateway deployments share one Redis without sharing limits.
    redis_key_prefix: str = "rl:"
    rate_limits: list[RatePolicy] = Field(default_factory=_default_rate_policies)
    rate_limit_on_redis_error: Literal["local", "open", "closed"] = "local"
    # Peers whose X-Forwarded-For is believed (CIDRs); nobody's by default.
    trusted_proxies: list[str] = Field(default_factory=list)

    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    retry_budget_min_per_second: float = Field(default=3.0, ge=0)

    cors_allow_origins: list[str] = Field(default_factory=list)
    cors_allow_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
    )
    cors_allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "Idempotency-Key"]
    )
    cors_max_age_seconds: int = Field(default=600, ge=0)

    identity_private_key_file: Path = DEV_STATE_DIR / "keys" / "identity.pem"
    identity_issuer: str = "mercato-gateway"
    identity_ttl_seconds: int = Field(default=30, ge=1, le=60)

    @model_validator(mode="after")
    def _production_is_explicit(self) -> GatewaySettings:
        if self.environment is Environment.PROD:
            if any(issuer.issuer == DEV_ISSUER for issuer in self.auth_issuers):
                raise ValueError(
                    f"the {DEV_ISSUER} token issuer is for development only; "
                    "set GATEWAY_AUTH_ISSUERS to your identity provider"
                )
            if "*" in self.cors_allow_origins:
                raise ValueError("GATEWAY_CORS_ALLOW_ORIGINS must list origins in production")
        names = {policy.name for policy in self.rate_limits}
        missing = {"user", "anonymous"} - names
        missing |= {r.rate_limit for r in self.routes if r.rate_limit and r.rate_limit not in names}
        if missing:
            raise ValueError(f"rate limit policies not defined: {sorted(missing)}")
        return self
