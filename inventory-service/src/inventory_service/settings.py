"""Inventory service settings: every knob is an INVENTORY_* environment variable."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.http_cache import cache_control
from mercato_shared.settings import ServiceSettings


class InventorySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INVENTORY_")

    service_name: str = "inventory"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/inventory"
    )
    api_port: int = 8002
    worker_port: int = 9102

    # How long caches may keep a catalogue answer (Cache-Control max-age). It shows the
    # available stock, which every order changes, so only briefly.
    catalogue_max_age_seconds: int = Field(default=5, ge=0)
    # How long past that a cache may still answer with it while the service fails.
    catalogue_stale_if_error_seconds: int = Field(default=60, ge=0)

    @property
    def catalogue_cache_control(self) -> str:
        """The Cache-Control header of the public catalogue's answers."""
        return cache_control(
            max_age=self.catalogue_max_age_seconds,
            stale_if_error=self.catalogue_stale_if_error_seconds,
        )
