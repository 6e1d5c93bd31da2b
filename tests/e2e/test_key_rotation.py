"""Rotating the gateway's identity signing key under traffic, as docs/operations.md says to."""

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from mercato_shared.identity import IDENTITY_HEADER, Role, issue_identity
from mercato_shared.identity_keys import SigningKey
from tests.e2e.processes import Process
from tests.infra import eventually, free_port, write_keypair

pytestmark = pytest.mark.e2e

ORDERS = "/api/v1/orders"


def _direct_token(private: Path) -> dict[str, str]:
    key = SigningKey.from_pem(private.read_bytes())
    token = issue_identity(key, subject="probe", roles={Role.CUSTOMER}, issuer="mercato-gateway")
    return {IDENTITY_HEADER: token}


async def test_the_signing_key_rotates_without_a_refused_request(
    order_db, dev_secret, dev_token, stack, tmp_path
):
    old_private, old_public = write_keypair(_dir(tmp_path / "old"))
    new_private, new_public = write_keypair(_dir(tmp_path / "new"))
    accepted = _dir(tmp_path / "accepted")
    (accepted / "old.pem").write_bytes(old_public.read_bytes())
    signing = _dir(tmp_path / "gateway") / "identity.pem"
    signing.write_bytes(old_private.read_bytes())

    order_port, gateway_port = free_port(), free_port()
    order = Process(
        "order-api",
        {
            "ORDER_DATABASE_URL": order_db,
            "ORDER_API_PORT": str(order_port),
            "ORDER_IDENTITY_PUBLIC_KEYS": str(accepted),
        },
        health_port=order_port,
        logs=tmp_path,
    )
    gateway = Process(
        "gateway",
        {
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_IDENTITY_PRIVATE_KEY_FILE": str(signing),
            "GATEWAY_REDIS_KEY_PREFIX": f"rotation-{gateway_port}:",
            "GATEWAY_AUTH_ISSUERS": json.dumps(
                [
                    {
                        "issuer": "mercato-dev",
                        "audiences": ["mercato"],
                        "algorithms": ["HS256"],
                        "hs256_secret_file": str(dev_secret),
                    }
                ]
            ),
            "GATEWAY_ROUTES": json.dumps(
                # Not rate limited: the traffic below is far above a customer's quota.
                [
                    {
                        "prefix": ORDERS,
                        "upstreams": [f"http://127.0.0.1:{order_port}"],
                        "rate_limited": False,
                    }
                ]
            ),
        },
        health_port=gateway_port,
        logs=tmp_path,
    )
    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        headers = {"Authorization": f"Bearer {dev_token('alice')}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}") as client:
            while not stop.is_set():
                statuses.append((await client.get(ORDERS, headers=headers)).status_code)

    async def order_api_accepts(private: Path) -> bool:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{order_port}") as client:
            status = (await client.get(ORDERS, headers=_direct_token(private))).status_code
        assert status in (200, 401), status
        return status == 200

    async def order_api_refuses(private: Path) -> bool:
        return not await order_api_accepts(private)

    async def more_traffic(count: int) -> None:
        target = len(statuses) + count
        await eventually(lambda: _reached(statuses, target), within=30)

    try:
        order.start()
        gateway.start()
        await order.wait_ready()
        await gateway.wait_ready()
        running = asyncio.create_task(traffic())
        await more_traffic(20)

        # 1. The new public key joins every service's set.
        (accepted / "new.pem").write_bytes(new_public.read_bytes())
        await eventually(lambda: order_api_accepts(new_private), within=15)
        await more_traffic(20)

        # 2. The gateway gets the new private key; its log says when it signs with it.
        staged = signing.with_suffix(".staged")
        staged.write_bytes(new_private.read_bytes())
        os.replace(staged, signing)
        new_kid = SigningKey.from_pem(new_private.read_bytes()).kid
        await eventually(
            lambda: _logged(gateway, f"identity tokens signed with key {new_kid}"), within=15
        )
        await more_traffic(20)

        # 3. The old public key is retired.
        (accepted / "old.pem").unlink()
        await eventually(lambda: order_api_refuses(old_private), within=15)
        await more_traffic(20)
        stop.set()
        await running
    finally:
        stop.set()
        gateway.stop()
        order.stop()
    assert len(statuses) >= 80
    assert set(statuses) == {200}, {status: statuses.count(status) for status in set(statuses)}


def _dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


async def _reached(statuses: list[int], target: int) -> bool:
    return len(statuses) >= target


async def _logged(process: Process, text: str) -> bool:
    return text in process.log_path.read_text()
