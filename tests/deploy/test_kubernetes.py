"""Every overlay renders, every object validates: built-in kinds against the Kubernetes
OpenAPI schemas (kubernetes-validate, offline), KEDA objects against KEDA's CRD, the
PrometheusRule against the Prometheus operator's."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.conftest import K8S, OVERLAYS, Tools, load_all

# A version kubernetes-validate ships schemas for (it works offline).
KUBERNETES_VERSION = "1.33.0"
PARTITIONS = 6
DOMAIN_SERVICES = ("order", "inventory", "payment", "notification")
# Kinds defined by custom resource definitions, validated against their CRDs below.
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def _validate_builtin(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pytest.fail(f"{name}: {error.message} at {list(error.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_validate(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for obj in rendered[overlay]:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        _validate_builtin(obj)


def test_prod_secret_template_validates() -> None:
    for obj in load_all((K8S / "overlays" / "prod" / "secrets.example.yaml").read_text()):
        _validate_builtin(obj)


@pytest.fixture(scope="session")
def scaledobject_schema(tools: Tools) -> dict[str, Any]:
    return _crd_schema(tools.keda_scaledobject_crd, "v1alpha1")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaledobjects_match_keda_crd(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, scaledobject_schema: dict[str, Any]
) -> None:
    scaled = [o for o in rendered[overlay] if o["kind"] == "ScaledObject"]
    assert sorted(o["metadata"]["name"] for o in scaled) == sorted(
        f"{s}-worker" for s in DOMAIN_SERVICES
    )
    deployments = {o["metadata"]["name"] for o in rendered[overlay] if o["kind"] == "Deployment"}
    for obj in scaled:
        jsonschema.validate(obj, scaledobject_schema)
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] in deployments
        # More consumers than partitions only adds idle ones; the relay needs one running.
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= PARTITIONS
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            metadata = trigger["metadata"]
            # KEDA reads metadata as strings only.
            assert all(isinstance(v, str) for v in metadata.values()), metadata
            assert metadata["consumerGroup"] == obj["metadata"]["name"]
            assert {"lagThreshold", "activationLagThreshold", "topic"} <= metadata.keys()


def _crd_schema(path: Path, version: str) -> dict[str, Any]:
    crd = yaml.safe_load(path.read_text())
    (found,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = found["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_rule_matches_its_crd(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, tools: Tools
) -> None:
    schema = _crd_schema(tools.prometheus_rule_crd, "v1")
    (rule,) = [o for o in rendered[overlay] if o["kind"] == "PrometheusRule"]
    # Not jsonschema.validate: checking the schema itself compiles every pattern, and one of
    # the CRD's (Go's `^(?i)...` after an anchor) is not one Python's re accepts.
    jsonschema.Draft7Validator(schema).validate(rule)
    assert rule["spec"]["groups"], "the PrometheusRule has no rules"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_its_pieces(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    names = Counter((o["kind"], o["metadata"]["name"]) for o in rendered[overlay])
    assert all(count == 1 for count in names.values())
    for svc in DOMAIN_SERVICES:
        for kind, name in [
            ("Deployment", f"{svc}-api"),
            ("Deployment", f"{svc}-worker"),
            ("Service", f"{svc}-api"),
            ("Job", f"{svc}-migrate"),
            ("HorizontalPodAutoscaler", f"{svc}-api"),
            ("PodDisruptionBudget", f"{svc}-api"),
            ("PodDisruptionBudget", f"{svc}-worker"),
        ]:
            assert (kind, name) in names, (kind, name)
    assert ("Job", "kafka-topics") in names
    assert ("NetworkPolicy", "default-deny") in names
    ingresses = [o for o in rendered[overlay] if o["kind"] == "Ingress"]
    assert len(ingresses) == 1
    assert ingresses[0]["spec"]["tls"]
    backends = {
        p["backend"]["service"]["name"]
        for rule in ingresses[0]["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"gateway"}


def _mercato_pods(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    pods = []
    for obj in objs:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            pods.append((obj["metadata"]["name"], obj["spec"]["template"]["spec"]))
    return pods


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for name, pod in _mercato_pods(rendered[overlay]):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= container["resources"].keys(), name
            if container["image"].split(":")[0].rsplit("/", 1)[-1] in {"kafka"}:
                continue  # the broker image rewrites its own config at start
            if name.endswith(("-api", "-worker")) or name == "gateway":
                assert security["readOnlyRootFilesystem"] is True, name
                probes = {"startupProbe", "livenessProbe", "readinessProbe"}
                assert probes <= container.keys(), name
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
