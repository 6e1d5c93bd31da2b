"""/healthz (the process is alive) and /readyz (its dependencies answer) for every process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_SECONDS = 2.0


async def run_checks(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check concurrently; each answers "ok" or the reason it failed."""

    async def one(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except Exception as exc:  # any failure means "not ready"
            return f"failed: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    return dict(zip(checks, results, strict=True))


class Readiness(BaseModel):
    """Whether the process's dependencies answer, and what each check said."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


def health_router(checks: Mapping[str, Check]) -> APIRouter:
    """Routes for liveness and readiness; ``checks`` name each dependency probed by /readyz."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "a dependency does not answer"}},
    )
    async def readyz() -> JSONResponse:
        results = await run_checks(checks)
        ready = all(result == "ok" for result in results.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
        )

    return router
