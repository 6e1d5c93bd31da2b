"""RFC 9457 problem details: one error hierarchy, one place that renders it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:mercato:problem:"
SCHEMA_REF = "#/components/schemas/"

log = logging.getLogger(__name__)


def problem_body(
    status: int,
    *,
    detail: str | None = None,
    problem_type: str = "about:blank",
    title: str | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """A problem body; the title defaults to the status phrase as RFC 9457 suggests."""
    body: dict[str, Any] = {
        "type": problem_type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extensions)
    return body


def problem_response(
    status: int,
    *,
    detail: str | None = None,
    problem_type: str = "about:blank",
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Render a problem body as a response."""
    body = problem_body(status, detail=detail, problem_type=problem_type, title=title, **extensions)
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {})
    )


class ValidationIssue(BaseModel):
    """One thing wrong with a request: where (loc), what (msg) and of which kind (type)."""

    loc: list[str | int] = Field(examples=[["query", "limit"]])
    msg: str
    type: str = Field(examples=["less_than_equal"])


class Problem(BaseModel):
    """An RFC 9457 problem body: how every error of every service and the gateway looks."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="urn:mercato:problem:<kind>, or about:blank when the status says it all",
        examples=["urn:mercato:problem:not-found"],
    )
    title: str = Field(examples=["Not Found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str | None = Field(default=None, examples=["order 7c9e... not found"])
    errors: list[ValidationIssue] | None = Field(
        default=None, description="what failed validation (400 malformed JSON, 422)"
    )


def problem_schemas() -> dict[str, Any]:
    """The OpenAPI component schemas that ``problem_responses`` refers to."""
    _, top = models_json_schema([(Problem, "serialization")], ref_template=SCHEMA_REF + "{model}")
    schemas: dict[str, Any] = top["$defs"]
    return schemas


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem bodies an operation can answer with, by status."""
    content = {PROBLEM_JSON: {"schema": {"$ref": SCHEMA_REF + "Problem"}}}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }


def document_problems(app: FastAPI) -> None:
    """Add the problem schemas to ``app``'s OpenAPI document, for ``problem_responses``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                problem_schemas()
            )
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


class ProblemError(Exception):
    """Base of every domain error: carries its HTTP status and problem type."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal Server Error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def to_response(self) -> JSONResponse:
        return problem_response(
            self.status,
            detail=self.detail,
            problem_type=PROBLEM_TYPE_BASE + self.slug,
            title=self.title,
            **self.extensions,
        )


class BadRequestError(ProblemError):
    status, slug, title = 400, "bad-request", "Bad Request"


class UnauthorizedError(ProblemError):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class ForbiddenError(ProblemError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFoundError(ProblemError):
    status, slug, title = 404, "not-found", "Not Found"


class ConflictError(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


async def _on_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)  # noqa: S101 - registered for ProblemError only
    return exc.to_response()


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    # A body that is not JSON at all is a malformed request, not a semantic one.
    if any(err["type"] == "json_invalid" for err in errors):
        return problem_response(
            400,
            detail="The request body is not valid JSON.",
            problem_type=PROBLEM_TYPE_BASE + "malformed-json",
            errors=errors,
        )
    return problem_response(
        422,
        detail="The request does not match the expected schema.",
        problem_type=PROBLEM_TYPE_BASE + "validation-error",
        errors=errors,
    )


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    return problem_response(exc.status_code, detail=exc.detail, headers=exc.headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, detail="An unexpected error occurred.")


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error the app can raise come out as application/problem+json."""
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
