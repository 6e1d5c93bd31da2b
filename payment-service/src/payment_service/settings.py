"""Payment service settings: every knob is an PAYMENT_* environment variable."""

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class PaymentSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_")

    service_name: str = "payment"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/payment"
    )
    api_port: int = 8003
    worker_port: int = 9103
