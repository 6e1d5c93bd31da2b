"""The public OpenAPI document, composed from the services' own and the gateway's configuration.

Each route's upstream serves its OpenAPI document. The gateway keeps the operations under the
route's prefix (it forwards paths unchanged, so they keep their paths), replaces the service's
identity header by the bearer token with the roles its access rules ask for, and adds what the
gateway answers itself: its refusals, the rate-limit headers, the composed order view and its
own endpoints. Nothing a service documents is written here a second time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from gateway.access import AccessPolicy
from gateway.compose import DETAILS_PATH
from gateway.settings import GatewaySettings, RouteConfig
from mercato_shared.problems import PROBLEM_JSON, problem_schemas

Document = dict[str, Any]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
REF = "#/components/"
PROBLEM = {"schema": {"$ref": REF + "schemas/Problem"}}
IDENTITY_HEADER = "x-mercato-identity"
BEARER = "bearer"

DESCRIPTION = """\
Mercato's public API. Every route is served through the gateway on this origin.

**Authentication.** `Authorization: Bearer <JWT>` from one of the configured issuers
(`make token` prints a development one). Operations say which roles they need (`security`,
and `x-mercato-access`); public ones accept a token too, and refuse an invalid one (401).

**Errors** are RFC 9457 problem bodies (`application/problem+json`, schema `Problem`), from
the gateway and the services alike.

**Rate limits.** Answers carry `RateLimit-Policy` and `RateLimit`
(draft-ietf-httpapi-ratelimit-headers); a refusal is a 429 with `Retry-After`, and every
answer of status 503 has a `Retry-After` too.

**Retries.** `POST /api/v1/orders` takes an `Idempotency-Key`: the same key and body give the
first order back.
"""


def compose(
    *,
    services: Mapping[str, Document],
    own: Document,
    settings: GatewaySettings,
    access: AccessPolicy,
) -> Document:
    """The public document: ``services`` by route prefix, ``own`` the gateway's endpoints."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    routes = {route.prefix: route for route in settings.routes}
    for prefix, spec in services.items():
        spec = _renamed(spec, schemas, service=prefix.rstrip("/").rsplit("/", 1)[-1])
        schemas.update(spec.get("components", {}).get("schemas", {}))
        for tag in spec.get("tags", []):
            tags.setdefault(tag["name"], tag)
        for path, item in spec.get("paths", {}).items():
            if path == prefix or path.startswith(prefix + "/"):
                paths[path] = {
                    method: _public_operation(
                        operation, method, path, routes[prefix], settings, access
                    )
                    for method, operation in item.items()
                    if method in METHODS
                }
    details = _details_operation(services, schemas, routes, settings, access)
    if details is not None:
        paths[DETAILS_PATH] = {"get": details}
    for path, item in own.get("paths", {}).items():
        paths.setdefault(path, item)
    schemas.update(own.get("components", {}).get("schemas", {}))
    schemas.update(problem_schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mercato API",
            "version": own["info"]["version"],
            "description": DESCRIPTION,
        },
        "tags": [*tags.values(), {"name": "gateway", "description": "the gateway's own endpoints"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": _gateway_responses(settings),
            "headers": _headers(settings),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "a JWT of one of these issuers: "
                    + ", ".join(issuer.issuer for issuer in settings.auth_issuers),
                }
            },
        },
    }


def _renamed(spec: Document, taken: Mapping[str, Any], *, service: str) -> Document:
    """``spec`` with its schemas renamed where another service has a different one of the name."""
    own = spec.get("components", {}).get("schemas", {})
    renames = {
        name: f"{service.capitalize()}{name}"
        for name, schema in own.items()
        if name in taken and taken[name] != schema
    }
    if not renames:
        return spec
    refs = {REF + "schemas/" + old: REF + "schemas/" + new for old, new in renames.items()}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: refs.get(value, value) if key == "$ref" else rewrite(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    spec = rewrite(spec)
    schemas = spec["components"]["schemas"]
    spec["components"]["schemas"] = {renames.get(name, name): s for name, s in schemas.items()}
    return spec


def _access(
    method: str, path: str, access: AccessPolicy
) -> tuple[bool, list[str], list[dict[str, list[str]]]]:
    """(public, roles, security requirements) of an operation under the access rules."""
    rule = access.rule(method.upper(), path)
    if rule is None:
        return False, [], [{BEARER: []}]
    roles = sorted(str(role) for role in rule.roles)
    if rule.public:
        return True, [], [{}, {BEARER: []}]
    return False, roles, [{BEARER: []}]


def _access_text(public: bool, roles: list[str]) -> str:
    if public:
        return "anyone, without a token (an invalid token is still refused)"
    if not roles:
        return "nobody: no access rule of the gateway covers it"
    return "a bearer token with the role " + " or ".join(roles)


def _policy_names(route: RouteConfig, public: bool) -> list[str]:
    if not route.rate_limited:
        return []
    if route.rate_limit:
        return [route.rate_limit]
    return ["user", "anonymous"] if public else ["user"]


def _public_operation(
    operation: Document,
    method: str,
    path: str,
    route: RouteConfig,
    settings: GatewaySettings,
    access: AccessPolicy,
) -> Document:
    """A service's operation as the gateway exposes it."""
    operation = copy.deepcopy(operation)
    public, roles, security = _access(method, path, access)
    policies = _policy_names(route, public)
    # The gateway sends the identity itself; a client's is stripped.
    parameters = [
        parameter
        for parameter in operation.pop("parameters", [])
        if not (parameter.get("in") == "header" and parameter["name"].lower() == IDENTITY_HEADER)
    ]
    if parameters:
        operation["parameters"] = parameters
    operation["security"] = security
    operation["x-mercato-access"] = {"public": public, "roles": roles}
    operation["x-mercato-rate-limit"] = policies
    limits = {p.name: p for p in settings.rate_limits}
    limit_text = (
        "; ".join(
            f"{name}: {limits[name].quota} per {limits[name].window_seconds} s" for name in policies
        )
        or "none at the gateway"
    )
    operation["description"] = (
        str(operation.get("description") or operation.get("summary") or "").rstrip()
        + f"\n\n**Access:** {_access_text(public, roles)}. **Rate limit:** {limit_text}."
    ).lstrip()
    responses: dict[str, Any] = operation.setdefault("responses", {})
    headers = _answer_headers(policies)
    for response in responses.values():
        if "$ref" not in response:
            response["headers"] = {**headers, **response.get("headers", {})}
    for status, name in _gateway_statuses(
        public=public, body="requestBody" in operation, rate_limited=bool(policies)
    ):
        if status == "400" and status in responses:
            responses[status]["description"] += "; or a request that breaks HTTP's framing rules"
        elif status not in responses or status == "401":
            responses[status] = {"$ref": REF + "responses/" + name}
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _gateway_statuses(*, public: bool, body: bool, rate_limited: bool) -> list[tuple[str, str]]:
    """The statuses the gateway itself may answer an operation with, and their responses."""
    statuses = [
        ("400", "Malformed"),
        ("401", "Unauthorized"),
        ("408", "RequestTimeout"),
        ("414", "UriTooLong"),
        ("431", "HeadersTooLarge"),
        ("502", "BadGateway"),
        ("503", "Unavailable"),
        ("504", "GatewayTimeout"),
    ]
    if not public:
        statuses.append(("403", "Forbidden"))
    if body:
        statuses.append(("413", "PayloadTooLarge"))
    if rate_limited:
        statuses.append(("429", "TooManyRequests"))
    return statuses


def _answer_headers(policies: list[str]) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": REF + "headers/X-Request-Id"}}
    if policies:
        headers["RateLimit-Policy"] = {"$ref": REF + "headers/RateLimit-Policy"}
        headers["RateLimit"] = {"$ref": REF + "headers/RateLimit"}
    return headers


def _headers(settings: GatewaySettings) -> dict[str, Any]:
    policies = ", ".join(
        f'"{p.name}";q={p.quota};w={p.window_seconds}' for p in settings.rate_limits
    )
    return {
        "X-Request-Id": {
            "description": "the request's id: the client's if well-formed, else a new one",
            "schema": {"type": "string"},
        },
        "RateLimit-Policy": {
            "description": f"the policy applied, quota q per window w seconds (here: {policies})",
            "schema": {"type": "string", "examples": ['"user";q=300;w=60']},
        },
        "RateLimit": {
            "description": "requests r left under the policy, and t seconds until it is full",
            "schema": {"type": "string", "examples": ['"user";r=299;t=1']},
        },
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
        "WWW-Authenticate": {
            "description": 'Bearer, with error="invalid_token" for a token that was refused',
            "schema": {"type": "string"},
        },
    }


def _problem(description: str, **headers: str) -> Document:
    response: Document = {"description": description, "content": {PROBLEM_JSON: PROBLEM}}
    if headers:
        response["headers"] = {
            name: {"$ref": REF + "headers/" + ref} for name, ref in headers.items()
        }
    return response


def _gateway_responses(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "Malformed": _problem("a request that breaks HTTP's framing rules"),
        "Unauthorized": _problem(
            "no bearer token where one is required, or one that is not valid (on public "
            "routes too), or a token in the URL",
            **{"WWW-Authenticate": "WWW-Authenticate"},
        ),
        "Forbidden": _problem("the token's roles do not allow this operation"),
        "RequestTimeout": _problem(
            f"the head took over {settings.header_timeout_seconds:g} s, or the body stalled "
            f"for {settings.body_idle_timeout_seconds:g} s or came slower than "
            f"{settings.min_body_bytes_per_second} B/s"
        ),
        "PayloadTooLarge": _problem(f"a body over {settings.max_body_bytes} bytes"),
        "UriTooLong": _problem(f"a request target over {settings.max_url_bytes} bytes"),
        "TooManyRequests": _problem(
            "the caller's rate limit is used up",
            **{
                "Retry-After": "Retry-After",
                "RateLimit-Policy": "RateLimit-Policy",
                "RateLimit": "RateLimit",
            },
        ),
        "HeadersTooLarge": _problem(
            f"a header over {settings.max_header_bytes} bytes, headers over "
            f"{settings.max_headers_bytes} bytes in all, or more than {settings.max_headers}"
        ),
        "BadGateway": _problem("the service failed, or answered with headers over the limits"),
        "Unavailable": _problem(
            "no instance of the service is available, it is at its concurrency limit, or the "
            "token keys cannot be fetched",
            **{"Retry-After": "Retry-After"},
        ),
        "GatewayTimeout": _problem("the service did not answer in time"),
    }


def _resolve(spec: Document, schema: Document) -> Document:
    """``schema``, or the component its ``$ref`` names."""
    while "$ref" in schema:
        name = schema["$ref"].removeprefix(REF + "schemas/")
        schema = spec["components"]["schemas"][name]
    return schema


def _ok_schema(spec: Document, path: str) -> Document | None:
    """The JSON schema of a GET's 200 answer in ``spec``."""
    try:
        schema: Document = spec["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
    except KeyError:
        return None
    return schema


def _details_operation(
    services: Mapping[str, Document],
    schemas: dict[str, Any],
    routes: Mapping[str, RouteConfig],
    settings: GatewaySettings,
    access: AccessPolicy,
) -> Document | None:
    """``GET /api/v1/orders/{order_id}/details``, from the three operations it is made of."""
    orders = services.get("/api/v1/orders")
    payments = services.get("/api/v1/payments")
    notifications = services.get("/api/v1/notifications")
    if orders is None or payments is None or notifications is None:
        return None
    order = _ok_schema(orders, "/api/v1/orders/{order_id}")
    payment = _ok_schema(payments, "/api/v1/payments/{order_id}")
    page = _ok_schema(notifications, "/api/v1/notifications")
    if order is None or payment is None or page is None:
        return None
    item = _resolve(notifications, _resolve(notifications, page)["properties"]["items"])["items"]
    schemas["OrderDetails"] = {
        "title": "OrderDetails",
        "type": "object",
        "description": "An order with its payment and notifications; a part whose service "
        "did not answer is null and named in missing.",
        "required": ["order", "payment", "notifications", "missing"],
        "properties": {
            "order": {"anyOf": [order, {"type": "null"}]},
            "payment": {"anyOf": [payment, {"type": "null"}]},
            "notifications": {"anyOf": [{"type": "array", "items": item}, {"type": "null"}]},
            "missing": {
                "type": "array",
                "items": {"enum": ["order", "payment", "notifications"]},
            },
        },
    }
    read = orders["paths"]["/api/v1/orders/{order_id}"]["get"]
    operation = {
        "tags": read.get("tags", []),
        "summary": "Order details",
        "description": "The order, its payment and its notifications in one answer, fetched "
        "concurrently by the gateway; each service checks ownership itself.",
        "operationId": "order_details",
        "parameters": read.get("parameters", []),
        "responses": {
            "200": {
                "description": "the order's view",
                "content": {"application/json": {"schema": {"$ref": REF + "schemas/OrderDetails"}}},
            },
            **{
                status: response
                for status, response in read.get("responses", {}).items()
                if status in ("404", "422")
            },
        },
    }
    composed = _public_operation(
        operation, "get", DETAILS_PATH, routes["/api/v1/orders"], settings, access
    )
    # The view asks its parts itself: their failures are in "missing", never a 502 or 504.
    for status in ("502", "504"):
        composed["responses"].pop(status, None)
    return composed
