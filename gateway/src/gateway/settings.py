"""Gateway settings: every knob is a GATEWAY_* environment variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, HttpUrl, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato_shared.settings import DEV_STATE_DIR, Environment


class RouteConfig(BaseModel):
    """A path prefix and the instances of the upstream that serves it."""

    prefix: str = Field(pattern=r"^/")
    upstreams: list[HttpUrl] = Field(min_length=1)
    timeout_seconds: float = Field(default=10.0, gt=0)


def _default_routes() -> list[RouteConfig]:
    # DESIGN.md's route table on the loopback ports of the native stack.
    return [
        RouteConfig(prefix="/api/v1/products", upstreams=[HttpUrl("http://127.0.0.1:8002")]),
        RouteConfig(prefix="/api/v1/orders", upstreams=[HttpUrl("http://127.0.0.1:8001")]),
        RouteConfig(prefix="/api/v1/payments", upstreams=[HttpUrl("http://127.0.0.1:8003")]),
        RouteConfig(prefix="/api/v1/notifications", upstreams=[HttpUrl("http://127.0.0.1:8004")]),
    ]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    environment: Environment = Environment.DEV
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8080

    # JSON, e.g. GATEWAY_ROUTES='[{"prefix": "/api/v1/orders", "upstreams": ["http://o1:8001"]}]'
    routes: list[RouteConfig] = Field(default_factory=_default_routes)
    max_body_bytes: int = Field(default=1_048_576, ge=0)
    upstream_connections: int = Field(default=200, ge=1)

    identity_private_key_file: Path = DEV_STATE_DIR / "keys" / "identity.pem"
    identity_issuer: str = "mercato-gateway"
    identity_ttl_seconds: int = Field(default=30, ge=1, le=60)
    # Until client authentication is configured, every request acts as this development
    # user; empty means anonymous (no roles).
    dev_identity_subject: str = "dev-customer"
    dev_identity_roles: list[str] = Field(default_factory=lambda: ["customer"])

    @model_validator(mode="after")
    def _dev_identity_only_in_dev(self) -> GatewaySettings:
        if self.environment is Environment.PROD and self.dev_identity_subject:
            raise ValueError(
                "GATEWAY_DEV_IDENTITY_SUBJECT acts for every caller; set it empty in production"
            )
        return self
