"""Settings common to every domain service; each service subclasses with its own env prefix."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The native dev stack keeps its state (keys, logs, data) here; see deploy/local/README.md.
DEV_STATE_DIR = Path("/var/tmp/mercato")  # noqa: S108 - dev-only default, overridable
SECRETS_DIR = Path("/run/secrets")


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class ServiceSettings(BaseSettings):
    """Knobs shared by every domain service's api and worker processes.

    Subclasses set ``env_prefix`` (``ORDER_``...) and their own defaults, so that every
    knob is an environment variable and the defaults work on loopback.
    """

    model_config = SettingsConfigDict(
        extra="ignore",
        validate_default=True,
        # Kubernetes mounts secrets as files; a field is read from <dir>/<env name> there.
        secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
    )

    service_name: str = "service"
    environment: Environment = Environment.DEV
    log_level: str = "INFO"

    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/mercato"
    )
    database_pool_size: int = Field(default=10, ge=1)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Prepended to every topic and consumer group name, so that several deployments (or
    # test runs) can share one Kafka cluster without seeing each other's events.
    kafka_prefix: str = ""
    consumer_max_attempts: int = Field(default=5, ge=1)
    consumer_retry_backoff_seconds: float = Field(default=0.2, gt=0)
    # Events of one partition applied in one transaction, at most: a larger batch spends
    # fewer commits per event, and holds its row locks (and repeats its work after a
    # failure) for longer.
    consumer_batch_size: int = Field(default=100, ge=1, le=1000)

    # Processed event ids are kept this long to recognise redeliveries (docs/architecture.md).
    inbox_retention_hours: float = Field(default=168.0, gt=0)
    outbox_poll_interval_seconds: float = Field(default=1.0, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)

    # The gateway's public keys: one PEM file (one or more keys) or a directory of *.pem
    # files, re-read when they change, so a signing key is rotated without a restart.
    identity_public_keys: Path = DEV_STATE_DIR / "keys" / "identity.pub.pem"
    identity_issuer: str = "mercato-gateway"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_host: str = "127.0.0.1"
    worker_port: int = 9100

    @model_validator(mode="after")
    def _no_dev_defaults_in_prod(self) -> ServiceSettings:
        if self.environment is Environment.PROD and "mercato:mercato@" in (
            self.database_url.get_secret_value()
        ):
            raise ValueError("database_url must be set explicitly in production")
        return self

    def topic(self, name: str) -> str:
        """The full name of a logical topic (``orders``) under this deployment's prefix."""
        return f"{self.kafka_prefix}{name}"

    @property
    def consumer_group(self) -> str:
        return f"{self.kafka_prefix}{self.service_name}-worker"

    @property
    def dead_letter_topic(self) -> str:
        return self.topic(f"{self.service_name}.dlq")
