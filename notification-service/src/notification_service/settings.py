"""Notification service settings: every knob is an NOTIFICATION_* environment variable."""

from enum import StrEnum

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mercato_shared.settings import ServiceSettings


class SmtpSecurity(StrEnum):
    NONE = "none"  # plain SMTP, as the dev mail catcher speaks it
    STARTTLS = "starttls"  # upgrade required: refuse to send in clear text
    TLS = "tls"  # implicit TLS from the first byte (port 465)


class NotificationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATION_")

    service_name: str = "notification"
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://mercato:mercato@127.0.0.1:5432/notification"
    )
    api_port: int = 8004
    worker_port: int = 9104

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    # Mails in flight at once, each on a connection of its own that later mails reuse: the
    # partitions' mails go side by side instead of taking turns on one connection.
    smtp_connections: int = Field(default=4, ge=1, le=64)
    # A connection idle longer than this is replaced before use rather than trusted, since
    # servers drop idle clients (some without a word).
    smtp_idle_seconds: float = Field(default=30.0, gt=0)
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    # Empty user name: the server takes mail without authentication (the dev catcher does).
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")

    mail_from: str = "Mercato <orders@mercato.local>"
    # Right-hand side of every Message-ID (<order-{id}@domain>) and the name we EHLO with.
    mail_domain: str = "mercato.local"
    # Orders placed without an e-mail address go to <customer_id>@this domain.
    fallback_email_domain: str = "customers.mercato.test"
