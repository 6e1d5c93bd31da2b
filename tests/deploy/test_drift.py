"""Images, compose services and Kubernetes workloads run the console scripts that the
members declare, with the environment variables that the settings classes read."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from tests.deploy.conftest import OVERLAYS, REPO, Target

# Images built from this repository (others, such as apache/kafka, run their own tools).
OUR_IMAGES = re.compile(r"(^|/)mercato/")


def _console_scripts() -> set[str]:
    scripts: set[str] = set()
    for pyproject in REPO.glob("*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        scripts |= set(project.get("scripts", {}))
    return scripts


def _settings_sections() -> dict[str, set[str]]:
    """.env.example (generated from the settings classes): section name -> variables."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in (REPO / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"# --- (\S+) ---", line):
            current = sections.setdefault(match.group(1), set())
        elif current is not None and re.match(r"[A-Z][A-Z0-9_]*=", line):
            current.add(line.split("=", 1)[0])
    return sections


SCRIPTS = _console_scripts()
SECTIONS = _settings_sections()


def _section_of(script: str) -> str:
    special = {"payment-sandbox": "sandbox", "mail-catcher": "mailcatcher"}
    return special.get(script, script.split("-")[0])


def _check_env(where: str, script: str, names: set[str]) -> None:
    allowed = SECTIONS[_section_of(script)]
    unknown = sorted(names - allowed)
    assert not unknown, f"{where} ({script}): not settings of its process: {unknown}"


def test_the_truth_is_complete() -> None:
    assert {"gateway", "order-api", "order-worker", "order-migrate", "mercato"} <= SCRIPTS
    assert {"gateway", "order", "sandbox", "mailcatcher", "mercato"} <= SECTIONS.keys()


def test_images_run_console_scripts(targets: dict[str, Target]) -> None:
    assert len(targets) == 7
    for name, target in targets.items():
        (script,) = target.command
        assert script in SCRIPTS, name
        # The image's environment belongs to the processes its member provides.
        member = tomllib.loads((REPO / name / "pyproject.toml").read_text())["project"]
        assert script in member["scripts"], name
        allowed = set().union(*(SECTIONS[_section_of(s)] for s in member["scripts"]))
        assert target.env <= allowed, f"{name}: {sorted(target.env - allowed)}"


def test_compose_runs_console_scripts_with_settings_env(compose: dict[str, Any]) -> None:
    ours = 0
    for name, service in compose["services"].items():
        if not ("build" in service or OUR_IMAGES.search(service.get("image", ""))):
            continue
        ours += 1
        script = (service.get("entrypoint") or service["command"])[0]
        assert script in SCRIPTS, name
        _check_env(f"compose service {name}", script, set(service.get("environment", {})))
    assert ours >= 14


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_runs_console_scripts_with_settings_env(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    config_maps = {
        o["metadata"]["name"]: set(o.get("data", {}))
        for o in rendered[overlay]
        if o["kind"] == "ConfigMap"
    }
    ours = 0
    for obj in rendered[overlay]:
        if obj["kind"] not in {"Deployment", "StatefulSet", "Job"}:
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            if not OUR_IMAGES.search(container["image"]):
                continue
            ours += 1
            (script,) = container["command"]
            assert script in SCRIPTS, obj["metadata"]["name"]
            names = {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                names |= config_maps[source["configMapRef"]["name"]]
            _check_env(f"{overlay} {obj['metadata']['name']}", script, names)
    assert ours >= 13
