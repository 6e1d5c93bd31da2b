"""The public document against the running system, and every API fuzzed from its own document.

One system for the module (``tests/e2e/system.py``). Schemathesis generates requests from each
service's document, sent straight to the service with an identity token, and from the
gateway's public document, sent through the gateway with a bearer token (the system's rate
limits let the run through). Every check is on: no server error, no status, content type or
header the document does not name, every answer valid against its schema, invalid input
refused, missing credentials refused; the one exception is spelled out in
``valid_data_accepted``. Each operation gets up to ``EXAMPLES`` requests, half of them
schema-valid and half not, and the stateful run as many sequences of up to five calls that
follow the document's links; derandomized, so a run is reproducible and a failure is found
again. About a minute of requests, a few minutes with the system's start, on two cores.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import positive_data_acceptance

from mercato_shared.identity import Role
from tests.e2e.system import SERVICES, System

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

EXAMPLES = 50
METHODS = {"get", "put", "post", "delete", "patch"}
FUZZ = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)


def _served(url: str) -> dict[str, Any]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.fixture(scope="module")
def bearer(dev_token: Callable[..., str]) -> dict[str, str]:
    """A customer and admin's token, good for the module's run."""
    return {"Authorization": f"Bearer {dev_token('fuzz', Role.CUSTOMER, Role.ADMIN)}"}


@pytest.fixture(scope="module")
def identity(sign: Callable[..., dict[str, str]]) -> Callable[[], dict[str, str]]:
    """A fresh identity header per request: the gateway's tokens live 30 seconds."""
    return lambda: sign("fuzz", Role.CUSTOMER, Role.ADMIN)


def _service_url(system: System, service: str) -> str:
    return f"http://127.0.0.1:{system.port[f'{service}-api']}"


def test_the_public_document_has_every_service_operation_under_its_routes(system: System):
    public = _served(system.gateway_url + "/openapi.json")
    routes = {"orders": "order", "products": "inventory", "payments": "payment"}
    routes["notifications"] = "notification"
    for segment, service in routes.items():
        prefix = f"/api/v1/{segment}"
        own = _served(_service_url(system, service) + "/openapi.json")
        under = {
            (method, path)
            for method, path in _operations(own)
            if path == prefix or path.startswith(prefix + "/")
        }
        assert under, service
        assert under <= _operations(public), service
        for method, path in under:
            documented = public["paths"][path][method]["responses"].keys()
            assert own["paths"][path][method]["responses"].keys() <= documented, (method, path)
    assert ("get", "/api/v1/orders/{order_id}/details") in _operations(public)


def test_every_public_operation_is_answered_with_a_documented_status(
    system: System, bearer: dict[str, str]
):
    public = _served(system.gateway_url + "/openapi.json")
    samples = {
        "order_id": "00000000-0000-4000-8000-000000000000",
        "sku": "MUG-BLUE",
    }
    bodies: dict[str, Any] = {"/api/v1/orders": {"lines": [{"sku": "MUG-BLUE", "quantity": 1}]}}
    bodies["/api/v1/products/{sku}/stock"] = {"on_hand": 500}
    for method, path in sorted(_operations(public)):
        url = system.gateway_url + path.format(**samples)
        for headers in (bearer, {}):
            response = requests.request(
                method, url, headers=headers, json=bodies.get(path), timeout=10
            )
            documented = public["paths"][path][method]["responses"]
            assert str(response.status_code) in documented, (method, path, response.text)


# The gateway refuses an oversized body, URL or header before any service sees it: for invalid
# data those are refusals too, besides the ones Schemathesis expects by default.
GATEWAY_REFUSALS = ("413", "414", "431")


def _schema(base_url: str, *, refusals: tuple[str, ...] = ()) -> BaseSchema:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    schema.config.update(base_url=base_url)
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, *refusals]
    # The credentials are the test's (a valid token on every request), not generated ones;
    # the checks still send requests without them and expect a refusal.
    schema.config.generation.update(with_security_parameters=False)
    return schema


def valid_data_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Schemathesis's positive_data_acceptance, but for an Idempotency-Key sent again.

    A key the fuzzer happens to send twice with different bodies is refused with 422
    idempotency-key-reused, as the Idempotency-Key header draft asks: the request is valid,
    the key's reuse is not. Any other refusal of a valid request still fails.
    """
    if response.status_code == 422:
        problem = response.json()
        if problem.get("type") == "urn:mercato:problem:idempotency-key-reused":
            return None
    return positive_data_acceptance(ctx, response, case)


def _fuzz(schema: BaseSchema, headers: Callable[[], dict[str, str]]) -> int:
    """Fuzz every operation, positive and negative requests; the number of requests sent.

    One operation's failure does not hide another's: all are run, then all reported.
    """
    sent = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @FUZZ
        @hypothesis.given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(
                headers=headers(),
                excluded_checks=[positive_data_acceptance],
                additional_checks=[valid_data_accepted],
            )

        try:
            run()
        except Exception as exc:  # every failing operation is reported below
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    log.info("%s: %d requests", schema.location, sent)
    return sent


def test_fuzz_the_gateway(system: System, bearer: dict[str, str]) -> None:
    assert _fuzz(_schema(system.gateway_url, refusals=GATEWAY_REFUSALS), lambda: bearer) > 0


@pytest.mark.parametrize("service", ["order", "inventory", "payment", "notification"])
def test_fuzz_a_service(system: System, identity, service: str) -> None:
    assert _fuzz(_schema(_service_url(system, service)), identity) > 0


@pytest.fixture
async def saga_paused(system: System) -> AsyncIterator[None]:
    """The system's workers stopped for the test, started again after it.

    An order placed meanwhile stays PENDING, with no payment and no notification, until the
    test ends: the answers about it depend on the requests made, not on how far the saga got.
    """
    workers = [f"{service}-worker" for service in SERVICES]
    for name in workers:
        system.processes[name].stop()
    try:
        yield
    finally:
        await asyncio.gather(*(system.restart(name) for name in workers))


def test_fuzz_the_gateway_statefully(
    system: System, dev_token: Callable[..., str], saga_paused: None
) -> None:
    """Sequences that follow the document's links: an order placed, then read and cancelled."""

    # The orders' operations and the parts of their view: the links between them are the
    # sequences worth following (the catalogue's cached answers only add noise).
    schema = _schema(system.gateway_url, refusals=GATEWAY_REFUSALS).include(
        path_regex="^/api/v1/(orders|payments|notifications)"
    )

    class Authenticated(schema.as_state_machine()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            # A customer of its own for each sequence. Idempotency-Keys are the customer's,
            # and the fuzzer draws the same ones again (the document's example among them):
            # an earlier sequence's key would turn this one's 201 into a replay or a 422.
            subject = f"fuzz-{uuid.uuid4().hex[:12]}"
            self.headers = {"Authorization": f"Bearer {dev_token(subject, Role.CUSTOMER)}"}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": self.headers}

        def validate_response(
            self,
            response: Any,
            case: schemathesis.Case,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(
                response,
                excluded_checks=[positive_data_acceptance],
                additional_checks=[valid_data_accepted],
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    # Which links a sequence can follow depends on the system's answers. With the saga paused
    # and a customer per sequence, a sequence gets the same answers whenever it is run, so
    # Hypothesis's own draws stay consistent (it raises FlakyStrategyDefinition otherwise).
    Authenticated.run(
        settings=hypothesis.settings(
            max_examples=EXAMPLES,
            stateful_step_count=5,
            # No shrinking: a failing sequence is reported as found, in bounded time.
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            deadline=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            database=None,
        )
    )
