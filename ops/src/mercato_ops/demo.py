"""`mercato demo N`: orders through the gateway as several users, with a mix that yields
confirmations, out-of-stock rejections and payment declines; waits until every order is
terminal and prints the outcomes and the time each took."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from mercato_ops.token import DEV_SECRET_FILE, make_token
from mercato_shared.identity import Role

USERS = 10
# (weight, lines, expected outcome) over the demo catalogue that `make dev` seeds.
MIX: tuple[tuple[int, list[dict[str, object]], str], ...] = (
    (70, [{"sku": "SOCKS", "quantity": 2}, {"sku": "CAP", "quantity": 1}], "confirmed"),
    (10, [{"sku": "SOLD-OUT", "quantity": 1}], "out of stock"),
    (10, [{"sku": "WATCH-GOLD", "quantity": 1}], "declined"),
    (10, [{"sku": "CAP", "quantity": 3}], "confirmed"),
)


class StackNotRunningError(Exception):
    """The gateway does not answer: `make up` first."""


@dataclass
class Outcome:
    status: str
    reason: str | None
    seconds: float


def _lines(rng: random.Random) -> list[dict[str, object]]:
    weights = [weight for weight, _, _ in MIX]
    return rng.choices([lines for _, lines, _ in MIX], weights=weights)[0]


async def run_demo(
    gateway_url: str, count: int, *, secret_file: Path = DEV_SECRET_FILE, within: float = 300
) -> list[Outcome]:
    """Place ``count`` orders, wait for all of them to end, return their outcomes."""
    rng = random.Random(count)  # noqa: S311 - a demo mix, not a secret
    tokens = [
        make_token(subject=f"demo-{n}", roles=[Role.CUSTOMER], secret_file=secret_file)
        for n in range(USERS)
    ]
    admin = make_token(subject="demo-admin", roles=[Role.ADMIN], secret_file=secret_file)
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30, limits=limits) as client:
        try:
            await client.get("/healthz")
        except httpx.TransportError as exc:
            raise StackNotRunningError(f"no gateway at {gateway_url}: run `make up`") from exc
        semaphore = asyncio.Semaphore(20)

        async def place(n: int) -> str:
            async with semaphore:
                response = await client.post(
                    "/api/v1/orders",
                    json={"lines": _lines(rng)},
                    headers={
                        "Authorization": f"Bearer {tokens[n % USERS]}",
                        "Idempotency-Key": f"demo-{time.time_ns()}-{n}",
                    },
                )
            response.raise_for_status()
            return str(response.json()["id"])

        ids = set(await asyncio.gather(*(place(n) for n in range(count))))
        return await _wait_terminal(client, admin, ids, within)


async def _wait_terminal(
    client: httpx.AsyncClient, admin: str, ids: set[str], within: float
) -> list[Outcome]:
    deadline = time.monotonic() + within
    outcomes: dict[str, Outcome] = {}
    while time.monotonic() < deadline:
        offset = 0
        while True:
            response = await client.get(
                "/api/v1/orders",
                params={"limit": 200, "offset": offset},
                headers={"Authorization": f"Bearer {admin}"},
            )
            if response.status_code != 200:
                break  # rate-limited or a blip: look again on the next round
            page = response.json()
            for order in page["items"]:
                if order["id"] in ids and order["status"] != "PENDING":
                    ended = datetime.fromisoformat(order["history"][-1]["at"])
                    started = datetime.fromisoformat(order["created_at"])
                    outcomes[order["id"]] = Outcome(
                        order["status"], order["cancel_reason"], (ended - started).total_seconds()
                    )
            offset += 200
            if offset >= page["total"]:
                break
        if len(outcomes) == len(ids):
            return list(outcomes.values())
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{len(ids) - len(outcomes)} orders still pending after {within}s")


def print_outcomes(outcomes: list[Outcome]) -> None:
    """Counts per outcome and time-to-terminal percentiles."""
    counts = Counter(
        outcome.status if outcome.reason is None else f"{outcome.status} ({outcome.reason})"
        for outcome in outcomes
    )
    for name, count in counts.most_common():
        print(f"{count:6d}  {name}")  # noqa: T201
    seconds = sorted(outcome.seconds for outcome in outcomes)
    if len(seconds) >= 2:
        cuts = statistics.quantiles(seconds, n=100, method="inclusive")
        print(  # noqa: T201
            f"time to terminal: p50 {cuts[49] * 1000:.0f} ms, p95 {cuts[94] * 1000:.0f} ms, "
            f"p99 {cuts[98] * 1000:.0f} ms, max {seconds[-1] * 1000:.0f} ms"
        )
