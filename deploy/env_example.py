"""Writes .env.example from the settings classes: `make env-example` after adding a setting."""

import json
import sys
from enum import Enum

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from inventory_service.settings import InventorySettings
from mercato_ops.mailcatcher import MailCatcherSettings
from mercato_ops.settings import OpsSettings
from notification_service.settings import NotificationSettings
from order_service.settings import OrderSettings
from payment_sandbox.settings import SandboxSettings
from payment_service.settings import PaymentSettings

SETTINGS: tuple[type[BaseSettings], ...] = (
    GatewaySettings,
    OrderSettings,
    InventorySettings,
    PaymentSettings,
    NotificationSettings,
    SandboxSettings,
    MailCatcherSettings,
    OpsSettings,
)


def _render(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, set | frozenset):
        return json.dumps(sorted(_render(v) for v in value))
    if isinstance(value, list):
        return json.dumps(
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        )
    return str(value)


def main() -> None:
    """Print every setting of every process with its default value."""
    out = sys.stdout
    out.write("# Every setting of every process, with its default. Copy to .env and change\n")
    out.write("# what you need; real secrets belong in a secret store (or files under\n")
    out.write("# /run/secrets), never in git. Regenerate with `make env-example`.\n")
    for cls in SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        out.write(f"\n# --- {prefix.rstrip('_').lower()} ---\n")
        defaults = cls()
        for name in cls.model_fields:
            out.write(f"{prefix}{name.upper()}={_render(getattr(defaults, name))}\n")


if __name__ == "__main__":
    main()
