"""`.env.example` documents exactly the variables the settings classes read."""

from gateway.settings import GatewaySettings
from inventory_service.settings import InventorySettings
from notification_service.settings import NotificationSettings
from order_service.settings import OrderSettings
from payment_service.settings import PaymentSettings
from tests.infra import REPO

SETTINGS = (
    GatewaySettings,
    OrderSettings,
    InventorySettings,
    PaymentSettings,
    NotificationSettings,
)


def test_env_example_matches_the_settings_classes():
    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    expected = {
        f"{cls.model_config['env_prefix']}{name.upper()}"
        for cls in SETTINGS
        for name in cls.model_fields
    }
    assert documented == expected, "run `make env-example`"
