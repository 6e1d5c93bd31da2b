"""Order service settings: every knob is an ORDER_* environment variable."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_")

    service_name: str = "order"
    database_url: SecretStr = SecretStr("postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/order")
    api_port: int = 8001
    worker_port: int = 9101
    # A pending order older than this is cancelled and compensated.
    saga_deadline_seconds: float = Field(default=60.0, gt=0)
    deadline_sweep_interval_seconds: float = Field(default=1.0, gt=0)
    # How long Idempotency-Key answers are remembered.
    idempotency_retention_hours: float = Field(default=24.0, gt=0)
