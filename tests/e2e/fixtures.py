"""A whole running system, shared by the tests of one module (e2e/ and faults/)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest

from tests.e2e.system import System, provisioned


@pytest.fixture(scope="module", name="system_env")
def system_env() -> dict[str, str]:
    """Environment added to every process; a test module may override this fixture."""
    return {}


@pytest.fixture(scope="module")
async def system(stack, keys, dev_secret, tmp_path_factory, system_env) -> AsyncIterator[System]:
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
