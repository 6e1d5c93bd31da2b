"""The notification-api application."""

from fastapi import FastAPI

from mercato_shared.api import create_service_app
from notification_service.api.notifications import router
from notification_service.settings import NotificationSettings


def create_app(settings: NotificationSettings | None = None) -> FastAPI:
    """Build the notification API; settings come from NOTIFICATION_* variables unless given."""
    return create_service_app(
        settings or NotificationSettings(), title="Mercato notification service", routers=[router]
    )
