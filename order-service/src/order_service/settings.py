"""Order service settings: every knob is an ORDER_* environment variable."""

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDER_")

    service_name: str = "order"
    database_url: SecretStr = SecretStr("postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/order")
    api_port: int = 8001
    worker_port: int = 9101
