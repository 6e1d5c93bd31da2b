"""Where the `mercato` CLI finds a running Mercato: MERCATO_* variables, loopback defaults."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _dev_db(name: str) -> SecretStr:
    return SecretStr(f"postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/{name}")


class OpsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERCATO_", extra="ignore")

    gateway_url: str = "http://127.0.0.1:8080"
    order_database_url: SecretStr = _dev_db("order")
    inventory_database_url: SecretStr = _dev_db("inventory")
    payment_database_url: SecretStr = _dev_db("payment")
    notification_database_url: SecretStr = _dev_db("notification")
    sandbox_url: str = "http://127.0.0.1:8090"
    mailcatcher_url: str = "http://127.0.0.1:8025"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_prefix: str = ""
