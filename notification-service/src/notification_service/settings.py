"""Notification service settings: every knob is an NOTIFICATION_* environment variable."""

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class NotificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")

    service_name: str = "notification"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/notification"
    )
    api_port: int = 8004
    worker_port: int = 9104
