"""docker-compose.yml against the Compose specification (compose-go's schema)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tests.deploy.conftest import Tools

ONE_SHOT = {"kafka-topics", "keys"} | {
    f"{s}-migrate" for s in ("order", "inventory", "payment", "notification")
}


def test_compose_matches_the_specification(tools: Tools, compose: dict[str, Any]) -> None:
    schema = json.loads(tools.compose_schema.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_compose_converges_without_restarts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        if "profiles" in service:
            continue
        if name not in ONE_SHOT:
            assert "healthcheck" in service or "image" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert condition["condition"] == expected, (name, dependency)
            if expected == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
