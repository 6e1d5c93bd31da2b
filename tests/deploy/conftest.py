"""Fixtures of the deployment checks: the pinned tools, the rendered overlays, the settings."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "tools" / "install.sh"
PROMETHEUS = REPO / "deploy" / "local" / "prometheus.sh"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")


@dataclass(frozen=True)
class Tools:
    kustomize: Path
    keda_scaledobject_crd: Path
    compose_schema: Path
    prometheus_rule_crd: Path


@pytest.fixture(scope="session")
def tools() -> Tools:
    """Install (once; cached under $MERCATO_STATE_DIR/tools) and locate the pinned tools."""
    result = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"deploy/tools/install.sh failed:\n{result.stderr}")
    found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Tools(
        kustomize=Path(found["KUSTOMIZE"]),
        keda_scaledobject_crd=Path(found["KEDA_SCALEDOBJECT_CRD"]),
        compose_schema=Path(found["COMPOSE_SCHEMA"]),
        prometheus_rule_crd=Path(found["PROMETHEUS_RULE_CRD"]),
    )


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from Debian's prometheus package (installed once if missing)."""
    result = subprocess.run(
        ["bash", str(PROMETHEUS), "install"],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"deploy/local/prometheus.sh install failed:\n{result.stderr}")
    found = subprocess.run(
        ["bash", str(PROMETHEUS), "promtool"], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def load_all(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def rendered(tools: Tools) -> dict[str, list[dict[str, Any]]]:
    """Every overlay rendered by kustomize, as lists of objects."""
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [str(tools.kustomize), "build", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"kustomize build {overlay}:\n{result.stderr}"
        out[overlay] = load_all(result.stdout)
    return out


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml, anchors resolved."""
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Target:
    """One image of the Dockerfile: a `FROM runtime AS <name>` stage and what it inherits."""

    name: str
    text: str
    command: list[str]
    exposed: set[int]
    healthcheck: list[str]
    user: str
    checked_scripts: set[str]
    env: set[str]


def dockerfile_stages(text: str) -> dict[str, str]:
    """Stage name (or its base, when unnamed) -> the stage's instructions, continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: dict[str, str] = {}
    for block in re.split(r"^(?=FROM )", joined, flags=re.MULTILINE)[1:]:
        header = block.splitlines()[0].split()
        stages[header[3] if len(header) > 3 else header[1]] = block
    return stages


def _instructions(block: str, keyword: str) -> list[str]:
    return re.findall(rf"^{keyword} (.+)$", block, re.MULTILINE)


@pytest.fixture(scope="session")
def targets() -> dict[str, Target]:
    """The images `make images` builds: the Dockerfile's targets over its runtime stage."""
    stages = dockerfile_stages(DOCKERFILE.read_text())
    runtime = stages["runtime"]
    out = {}
    for name, block in stages.items():
        if not block.startswith("FROM runtime AS "):
            continue
        (cmd,) = _instructions(block, "CMD")
        (healthcheck,) = _instructions(block, "HEALTHCHECK")
        users = _instructions(runtime, "USER") + _instructions(block, "USER")
        out[name] = Target(
            name=name,
            text=block,
            command=json.loads(cmd),
            exposed={int(p) for line in _instructions(block, "EXPOSE") for p in line.split()},
            healthcheck=json.loads(healthcheck.split(" CMD ", 1)[1]),
            user=users[-1],
            checked_scripts=set(re.findall(r"test -x /opt/venv/bin/([\w-]+)", block)),
            env=set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)=", block)),
        )
    return out
