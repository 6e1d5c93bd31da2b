"""Test helpers for the real servers of the dev stack: databases, topics, keys, waiting."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from mercato_shared import migrations

PG_HOST = os.environ.get("MERCATO_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MERCATO_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("MERCATO_TEST_PG_USER", "mercato")
PG_PASSWORD = os.environ.get("MERCATO_TEST_PG_PASSWORD", "mercato")
KAFKA = os.environ.get("MERCATO_TEST_KAFKA", "127.0.0.1:9092")
REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def database_url(name: str, driver: str = "postgresql+asyncpg") -> str:
    return f"{driver}://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{name}"


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(database_url("postgres", "postgresql"))


async def create_database(package: str | None) -> str:
    """A fresh database named t_<random>, migrated with ``package``'s Alembic scripts."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = database_url(name)
    if package is not None:
        # Alembic's env runs its own event loop, so it needs a thread of its own.
        await asyncio.to_thread(migrations.upgrade, package, url)
    return url


async def schema_differences(
    url: str, metadata: MetaData, *, tables: Collection[str] | None = None
) -> list[Any]:
    """What Alembic would change to make the migrated database match ``metadata`` (or only
    its ``tables``): empty when the migrations and the models agree."""

    def included(name: str | None, kind: str, _: object) -> bool:
        return tables is None or kind != "table" or name in tables

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_name": included}), metadata
                )
            )
    finally:
        await engine.dispose()


async def migrated_down_and_up(package: str, url: str, *, to: str = "0001") -> None:
    """Downgrade a service's database to revision ``to``, then upgrade it to head again."""
    config = migrations.alembic_config(package, url)
    await asyncio.to_thread(command.downgrade, config, to)
    await asyncio.to_thread(command.upgrade, config, "head")


async def drop_database(url: str, *, within: float = 30.0) -> None:
    """Drop a test database, waiting out an autovacuum worker that may be visiting it.

    FORCE ends our own sessions, but not an autovacuum worker's, which runs as a superuser.
    """
    name = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + within
    conn = await _admin()
    try:
        while True:
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


def random_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def write_keypair(directory: Path) -> tuple[Path, Path]:
    """An ES256 key pair for identity tokens: (private, public) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / "identity.pem"
    public = directory / "identity.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


# Ports a test chooses, then binds later (or has a server bind): below the kernel's ephemeral
# range, which outgoing connections draw from. A port from that range can be taken by any
# client connection between the choice and the bind, and the server's start then fails with
# "address already in use".
_CHOSEN_PORTS = range(20000, 32000)
_HANDED_OUT: set[int] = set()


def _ephemeral_ports() -> range:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(int(low), int(high) + 1)


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range where it is safe until bound."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in _CHOSEN_PORTS if p not in ephemeral and p not in _HANDED_OUT]
    for port in random.sample(candidates, k=min(len(candidates), 200)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        # Not bound yet by whoever asked: without this, a second call could choose it again.
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_CHOSEN_PORTS} outside {ephemeral}")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns something truthy, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
        except Exception as exc:  # a probe may fail until the condition holds
            last_error = exc
        else:
            if result:
                return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last error: {last_error!r})")


class FakeClock:
    """Monotonic seconds that only move when a test moves them: no test waits for time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
