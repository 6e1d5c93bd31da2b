"""Starting the real console scripts as subprocesses, on free ports, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.infra import eventually

BIN = Path(sys.executable).parent


class Process:
    """One console script with its own environment and log file."""

    def __init__(
        self,
        script: str,
        env: dict[str, str],
        *,
        health_port: int,
        logs: Path,
        args: tuple[str, ...] = (),
    ) -> None:
        self.script = script
        self.args = args
        self.env = env
        self.health_port = health_port
        self.log_path = logs / f"{script}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / self.script), *self.args],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def wait_ready(self, path: str = "/readyz", within: float = 45.0) -> None:
        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.script} exited:\n{self.tail()}")
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{self.health_port}{path}")
            return response.status_code == 200

        try:
            await eventually(ready, within=within, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{self.script} not ready: {exc}\n{self.tail()}") from exc

    def run(self, timeout: float = 60.0) -> None:
        """Run to completion (a one-shot script), failing with its log on a non-zero exit."""
        self.start()
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        assert code == 0, f"{self.script} exited {code}:\n{self.tail()}"

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
