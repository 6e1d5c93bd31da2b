"""A real mail catcher for the notification tests, on ports of their own."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from mercato_ops.mailcatcher import MailCatcher, MailCatcherSettings
from tests.infra import free_port


@pytest.fixture
def catcher_settings(tmp_path) -> MailCatcherSettings:
    # A fixed SMTP port, so that a test can stop the catcher and bring it back on it.
    return MailCatcherSettings(smtp_port=free_port(), http_port=0, store=tmp_path / "mail.jsonl")


@pytest.fixture
async def catcher(catcher_settings):
    async with MailCatcher(catcher_settings) as catcher:
        yield catcher


Mails = Callable[[MailCatcher], Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def mails() -> Mails:
    """What a catcher lists over its HTTP API, newest first."""

    async def listed(catcher: MailCatcher) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=catcher.http_url) as http:
            response = await http.get("/api/messages")
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result

    return listed
