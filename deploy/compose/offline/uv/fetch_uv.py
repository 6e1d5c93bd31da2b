"""Extract uv and uvx for this machine's architecture from uv's wheel on PyPI."""

from __future__ import annotations

import hashlib
import io
import json
import platform
import sys
import urllib.request
import zipfile
from pathlib import Path

ARCH = {"x86_64": "x86_64", "aarch64": "aarch64"}[platform.machine()]


def main(version: str, out: Path) -> None:
    """Download the manylinux wheel of uv ``version`` and write its binaries into ``out``."""
    # The simple index (PEP 691, JSON): what pip and uv themselves read.
    request = urllib.request.Request(
        "https://pypi.org/simple/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - fixed https URL
        files = json.load(response)["files"]
    (wheel,) = (
        f for f in files if f["filename"].startswith(f"uv-{version}-py3-none-manylinux_2_17_{ARCH}")
    )
    with urllib.request.urlopen(wheel["url"], timeout=300) as response:  # noqa: S310
        data = response.read()
    if hashlib.sha256(data).hexdigest() != wheel["hashes"]["sha256"]:
        sys.exit(f"{wheel['filename']}: sha256 mismatch")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in ("uv", "uvx"):
            target = out / name
            target.write_bytes(archive.read(f"uv-{version}.data/scripts/{name}"))
            target.chmod(0o755)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
