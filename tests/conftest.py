"""Session-wide infrastructure: the dev stack's servers, identity keys, per-test databases."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mercato_shared.identity import Identity, Role, issue_identity
from mercato_shared.identity_keys import SigningKey
from tests import infra
from tests.kafka_tools import created_topics, delete_topics, ensure_topics, ping_kafka

if TYPE_CHECKING:
    from tests.e2e.system import System


@pytest.fixture(scope="session")
async def stack() -> None:
    """Make sure Postgres, Redis and Kafka run (started by the stack scripts if not)."""
    try:
        await ping_kafka(infra.KAFKA)
        conn = await infra._admin()
        await conn.close()
    except Exception:
        # Not reachable: start them (make test has normally done so already).
        script = str(infra.REPO / "deploy/local/stack.sh")
        await asyncio.to_thread(subprocess.run, ["bash", script, "start"], check=True)


@pytest.fixture(scope="session", autouse=True)
async def _delete_created_topics() -> AsyncIterator[None]:
    """Delete the topics the session created, when it ends."""
    yield
    if created_topics:
        await delete_topics(infra.KAFKA, names=set(created_topics))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The (private, public) identity key pair every test process shares."""
    return infra.write_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def sign(keys: tuple[Path, Path]) -> Callable[..., dict[str, str]]:
    """Build an X-Mercato-Identity header as the gateway would."""
    private = SigningKey.from_pem(keys[0].read_bytes())

    def header(subject: str = "alice", *roles: Role) -> dict[str, str]:
        token = issue_identity(
            private,
            subject=subject,
            roles=set(roles or (Role.CUSTOMER,)),
            issuer="mercato-gateway",
        )
        return {"X-Mercato-Identity": token}

    return header


@pytest.fixture
def customer() -> Identity:
    return Identity(subject="alice", roles=frozenset({Role.CUSTOMER}))


@pytest.fixture
async def kafka_prefix(stack: None) -> str:
    """A topic prefix of this test's own, with the system's topics created under it."""
    prefix = infra.random_prefix()
    await ensure_topics(
        infra.KAFKA,
        [f"{prefix}{name}" for name in ("orders", "inventory", "payments")],
        partitions=3,
    )
    return prefix


def database_fixture(package: str | None) -> Callable[..., AsyncIterator[str]]:
    """A fixture giving each test its own database migrated by ``package``."""

    async def fixture(stack: None) -> AsyncIterator[str]:
        url = await infra.create_database(package)
        try:
            yield url
        finally:
            await infra.drop_database(url)

    return fixture


order_db = pytest.fixture(database_fixture("order_service"), name="order_db")
inventory_db = pytest.fixture(database_fixture("inventory_service"), name="inventory_db")
payment_db = pytest.fixture(database_fixture("payment_service"), name="payment_db")
notification_db = pytest.fixture(database_fixture("notification_service"), name="notification_db")
empty_db = pytest.fixture(database_fixture(None), name="empty_db")


@pytest.fixture(scope="session")
def dev_secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The development token issuer's HS256 secret, as the native stack generates it."""
    path = tmp_path_factory.mktemp("secrets") / "dev-token-secret"
    path.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    return path


@pytest.fixture(scope="session")
def dev_token(dev_secret: Path) -> Callable[..., str]:
    """Bearer tokens from the development issuer, as `mercato token` prints them."""
    from mercato_ops.token import make_token

    def token(subject: str = "alice", *roles: Role) -> str:
        return make_token(
            subject=subject,
            roles=[Role(role) for role in roles or (Role.CUSTOMER,)],
            secret_file=dev_secret,
        )

    return token


@pytest.fixture(scope="module", name="system_env")
def system_env() -> dict[str, str]:
    """Environment added to every process of ``system``; a test module may override it."""
    return {}


@pytest.fixture(scope="module")
async def system(
    stack: None,
    keys: tuple[Path, Path],
    dev_secret: Path,
    tmp_path_factory: pytest.TempPathFactory,
    system_env: dict[str, str],
) -> AsyncIterator[System]:
    """A whole running system, shared by the tests of one module (e2e/ and faults/)."""
    from tests.e2e.system import provisioned

    async with provisioned(
        workdir=tmp_path_factory.mktemp("system"),
        keys=keys,
        dev_secret=dev_secret,
        extra_env=system_env,
    ) as system:
        yield system
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit too.
    codes = system.exit_codes
    assert all(code in (0, -signal.SIGTERM, None) for code in codes.values()), codes
