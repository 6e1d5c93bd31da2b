"""The native stack's Prometheus (deploy/local/prometheus.sh): it scrapes every process that
services.sh starts, on loopback, with the rule file loaded; and it really starts so, and
stops without leaving a server behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import PROMETHEUS, REPO

SERVICES = REPO / "deploy" / "local" / "services.sh"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
# services.sh's processes that serve no /metrics of Mercato's.
STAND_INS = {"payment-sandbox", "mail-catcher"}


def _run(command: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(PROMETHEUS), command],
        capture_output=True,
        text=True,
        check=False,
        timeout=90,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A scratch state dir and a free port, nothing of whoever runs pytest."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MERCATO_")}
    return base | {
        "MERCATO_STATE_DIR": str(tmp_path / "state"),
        "MERCATO_PROMETHEUS_PORT": str(_free_port()),
    }


def _config(env: dict[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_run("config", env))
    return config


def _targets(config: dict[str, Any]) -> dict[str, str]:
    """process label -> target."""
    return {
        group["labels"]["process"]: target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }


def test_scrapes_every_process_of_services_sh_on_loopback(env: dict[str, str]) -> None:
    declared = dict(re.findall(r"\[([a-z-]+)\]=(\d+)", SERVICES.read_text()))
    expected = {name: port for name, port in declared.items() if name not in STAND_INS}
    assert len(expected) == 9
    targets = _targets(_config(env))
    prometheus = targets.pop("prometheus")
    assert prometheus == f"127.0.0.1:{env['MERCATO_PROMETHEUS_PORT']}"
    assert targets == {name: f"127.0.0.1:{port}" for name, port in expected.items()}


def test_config_loads_the_rules_and_passes_promtool(
    env: dict[str, str], promtool: str, tmp_path: Path
) -> None:
    text = _run("config", env)
    config = yaml.safe_load(text)
    assert [Path(p) for p in config["rule_files"]] == [RULES]
    # The jobs and labels the rules and compose's configuration use.
    compose = yaml.safe_load((REPO / "deploy/compose/observability/prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert jobs == [job["job_name"] for job in compose["scrape_configs"]]
    assert config["global"] == compose["global"]
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback URL
        return json.load(response)


@pytest.fixture
def running(env: dict[str, str], promtool: str) -> Iterator[str]:
    """A started Prometheus's URL; stopped afterwards."""
    _run("start", env)
    try:
        yield _run("url", env).strip()
    finally:
        _run("stop", env)


def test_starts_on_loopback_with_the_rules_and_stops(env: dict[str, str], running: str) -> None:
    assert running == f"http://127.0.0.1:{env['MERCATO_PROMETHEUS_PORT']}"
    groups = _get(f"{running}/api/v1/rules")["data"]["groups"]
    expected = yaml.safe_load(RULES.read_text())["groups"]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in expected)
    assert sum(len(g["rules"]) for g in groups) == sum(len(g["rules"]) for g in expected)
    deadline = time.monotonic() + 30
    while True:
        active = _get(f"{running}/api/v1/targets")["data"]["activeTargets"]
        if len(active) == 10 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(t["labels"]["job"] for t in active).count("worker") == 4
    pid = Path(env["MERCATO_STATE_DIR"], "run", "prometheus.pid").read_text().strip()
    if shutil.which("ss"):
        listening = subprocess.run(
            ["ss", "-Hltnp"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        ours = [line.split()[3] for line in listening if f"pid={pid}," in line]
        assert ours == [f"127.0.0.1:{env['MERCATO_PROMETHEUS_PORT']}"], ours
    _run("stop", env)
    status = subprocess.run(
        ["bash", str(PROMETHEUS), "status"], capture_output=True, text=True, env=env, check=False
    )
    assert status.returncode == 1
    assert "stopped" in status.stdout
    assert not Path(f"/proc/{pid}").exists()
