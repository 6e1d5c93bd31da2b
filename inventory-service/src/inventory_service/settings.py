"""Inventory service settings: every knob is an INVENTORY_* environment variable."""

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_")

    service_name: str = "inventory"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/inventory"
    )
    api_port: int = 8002
    worker_port: int = 9102
