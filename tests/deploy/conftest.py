"""Fixtures of the deployment checks: the pinned tools, the rendered overlays, the settings."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "tools" / "install.sh"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")


@dataclass(frozen=True)
class Tools:
    kustomize: Path
    keda_scaledobject_crd: Path
    compose_schema: Path


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
    )


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
