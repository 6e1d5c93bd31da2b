"""Every service documents the problem bodies it answers with, through one shared helper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from inventory_service.app import create_app as inventory_app
from mercato_shared.problems import PROBLEM_JSON
from notification_service.app import create_app as notification_app
from order_service.app import create_app as order_app
from payment_service.app import create_app as payment_app

APPS: dict[str, Callable[[], FastAPI]] = {
    "order": order_app,
    "inventory": inventory_app,
    "payment": payment_app,
    "notification": notification_app,
}
METHODS = {"get", "put", "post", "delete", "patch"}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        if path.startswith("/api/")
        for method, operation in item.items()
        if method in METHODS
    ]


@pytest.fixture(params=sorted(APPS), name="document")
def document_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return APPS[request.param]().openapi()


def test_every_error_is_a_documented_problem(document):
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]


def test_every_operation_needs_the_identity_and_says_what_it_refuses(document):
    assert document["components"]["securitySchemes"]["identity"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Mercato-Identity",
        "description": document["components"]["securitySchemes"]["identity"]["description"],
    }
    for method, path, operation in _operations(document):
        statuses = operation["responses"].keys()
        assert operation["security"] == [{"identity": []}], (method, path)
        assert {"401", "422"} <= statuses, (method, path)
        if "requestBody" in operation:
            assert "400" in statuses, (method, path)  # a body that is not JSON
        if "{" in path:
            assert "404" in statuses, (method, path)


def test_every_string_and_number_parameter_is_bounded(document):
    for _, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            variants = schema.get("anyOf", [schema])
            for variant in variants:
                kind = variant.get("type")
                if kind == "string" and "format" not in variant and "enum" not in variant:
                    assert "maxLength" in variant or "pattern" in variant, (path, parameter)
                if kind == "integer":
                    assert "maximum" in variant, (path, parameter)
                    assert "minimum" in variant, (path, parameter)
