"""The images `make images` builds are the ones compose and Kubernetes run: same names,
processes, users, ports and probes; and the offline overrides cover what they must."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import OVERLAYS, REPO, Target

OFFLINE = REPO / "deploy" / "compose" / "offline"
OURS = re.compile(r"(?:^|/)mercato/([\w-]+)(?::([\w.-]+))?(?:@sha256:\w+)?$")


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags (!reset, !override), read as their plain values."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _plain)


def _override(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((OFFLINE / name).read_text(), Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    return data


def _scripts(member: str) -> set[str]:
    project = tomllib.loads((REPO / member / "pyproject.toml").read_text())["project"]
    return set(project["scripts"])


def _listening(script: str, env: dict[str, Any]) -> set[int]:
    """The HTTP ports a process listens on, by its settings."""
    if script.endswith("-worker"):
        suffixes: tuple[str, ...] = ("_WORKER_PORT",)
    elif script.endswith("-api"):
        suffixes = ("_API_PORT",)
    else:
        suffixes = ("GATEWAY_PORT", "SANDBOX_PORT", "MAILCATCHER_HTTP_PORT")
    return {int(v) for k, v in env.items() if k.endswith(suffixes)}


# --- compose -------------------------------------------------------------------------


def test_compose_builds_each_image_from_its_target(
    compose: dict[str, Any], targets: dict[str, Target]
) -> None:
    built = {}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        build = service["build"]
        assert build["context"] == ".", name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert build["args"]["MEMBER"] == build["target"], name
        match = OURS.search(service["image"])
        assert match, name
        assert match.group(1) == build["target"], name
        built[build["target"]] = name
    assert set(built) == set(targets)


def test_compose_runs_our_images_as_built(
    compose: dict[str, Any], targets: dict[str, Target]
) -> None:
    for name, service in compose["services"].items():
        match = OURS.search(service.get("image", ""))
        if not match:
            continue
        target = targets[match.group(1)]
        assert match.group(2) == "dev", name
        script = (service.get("entrypoint") or service["command"])[0]
        assert script in _scripts(target.name), name
        environment = service.get("environment", {})
        for port in service.get("ports", []):
            assert int(str(port).rsplit(":", 1)[-1]) in target.exposed, (name, port)
        listening = _listening(script, environment)
        assert listening <= target.exposed, name
        # The healthcheck probes the port the process listens on.
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if test:
            assert any(f"127.0.0.1:{port}/" in test for port in listening), name


# --- Kubernetes ------------------------------------------------------------------------


def _named_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_runs_the_images_as_built(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, targets: dict[str, Target]
) -> None:
    config_maps = {
        o["metadata"]["name"]: o.get("data", {})
        for o in rendered[overlay]
        if o["kind"] == "ConfigMap"
    }
    seen = set()
    for obj in rendered[overlay]:
        if obj["kind"] not in {"Deployment", "StatefulSet", "Job"}:
            continue
        pod = obj["spec"]["template"]["spec"]
        for container in pod["containers"]:
            match = OURS.search(container["image"])
            if not match:
                continue
            where = f"{overlay} {obj['metadata']['name']}"
            target = targets[match.group(1)]
            seen.add(target.name)
            (script,) = container["command"]
            assert script in _scripts(target.name), where
            # The image's user, which the pod insists on.
            uid, gid = (int(x) for x in target.user.split(":"))
            assert pod["securityContext"]["runAsUser"] == uid, where
            assert pod["securityContext"]["runAsGroup"] == gid, where
            ports = _named_ports(container)
            assert set(ports.values()) <= target.exposed, where
            env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                env |= config_maps[source["configMapRef"]["name"]]
            # The process listens on the port the probes and the Service use.
            listening = _listening(script, env)
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if "httpGet" not in container.get(probe, {}):
                    continue
                port = container[probe]["httpGet"]["port"]
                number = ports[port] if isinstance(port, str) else port
                assert number in listening, (where, probe, number)
            if "livenessProbe" in container and script == target.command[0]:
                # Where the pod runs the image's default process, both probe the same path.
                path = container["livenessProbe"]["httpGet"]["path"]
                assert path in target.healthcheck[-1], (where, path)
    # Production has no sandbox nor mail catcher: the real processor and relay stand there.
    expected = set(targets) if overlay == "dev" else set(targets) - {"ops", "payment-sandbox"}
    assert seen == expected


def test_dev_overlay_tags_every_image(targets: dict[str, Target]) -> None:
    kustomization = yaml.safe_load(
        (REPO / "deploy/k8s/overlays/dev/kustomization.yaml").read_text()
    )
    assert {i["name"] for i in kustomization["images"]} == {f"mercato/{t}" for t in targets}


# --- the offline overrides --------------------------------------------------------------


def test_offline_override_replaces_every_upstream_image(compose: dict[str, Any]) -> None:
    override = _override("compose.yaml")["services"]
    dockerfile = (REPO / "Dockerfile").read_text()
    (uv_tag,) = re.findall(r"^ARG UV_IMAGE=\S+:(\S+)$", dockerfile, re.MULTILINE)
    for name, service in compose["services"].items():
        if "profiles" in service:
            continue
        if "build" in service:
            build = override[name]["build"]
            assert build["network"] == "host", name
            assert build["args"]["UV_IMAGE"] == f"mercato-offline/uv:{uv_tag}", name
            assert build["args"]["PYTHON_IMAGE"].startswith("mercato-offline/"), name
        elif not OURS.search(service["image"]):
            assert override[name]["image"].startswith("mercato-offline/"), name
    assert set(override) <= set(compose["services"])


def test_compose_test_publishes_the_gateway_only(compose: dict[str, Any]) -> None:
    override = _override("compose-test.yaml")["services"]
    for name, service in compose["services"].items():
        if "profiles" in service or not service.get("ports"):
            continue
        if name == "gateway":
            (port,) = override[name]["ports"]
            assert port.startswith("127.0.0.1:${MERCATO_COMPOSE_TEST_PORT"), port
            assert port.endswith(":8080"), port
        else:
            assert override[name]["ports"] == [], name


def test_compose_test_routes_are_the_compose_routes(compose: dict[str, Any]) -> None:
    base = json.loads(compose["services"]["gateway"]["environment"]["GATEWAY_ROUTES"])
    override = _override("compose-test.yaml")["services"]["gateway"]["environment"]
    routes = json.loads(override["GATEWAY_ROUTES"])

    # The same paths to the same upstreams; the override's own settings (longer timeouts, no
    # response cache) are its business.
    def strip(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: r[k] for k in ("prefix", "upstreams")} for r in configs]

    assert strip(routes) == strip(base)


def test_offline_observability_stand_ins_keep_the_release(compose: dict[str, Any]) -> None:
    override = _override("compose.yaml")["services"]
    jaeger_tag = compose["services"]["jaeger"]["image"].rpartition(":")[2]
    assert override["jaeger"]["image"] == f"mercato-offline/jaeger:{jaeger_tag}"
    standins = (OFFLINE / "standins.sh").read_text()
    assert f"JAEGER_IMAGE={override['jaeger']['image']}" in standins
    assert (REPO / "deploy/local/jaeger.sh").read_text().count(f"JAEGER_RELEASE=v{jaeger_tag}") == 1
