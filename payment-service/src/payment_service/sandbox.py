"""Client of the card processor (payment-sandbox): every call goes through a circuit breaker
and budgeted retries with backoff and jitter.

Every operation the processor offers is safe to repeat: authorizations and refunds carry an
idempotency key, capture and void are idempotent by state. So a timeout or a 5xx, whose outcome
is unknown, is retried as is; the key makes a repeat return the first outcome.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict

from mercato_shared.metrics import instrument_breaker
from mercato_shared.resilience import (
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    RetryBudget,
    RetryPolicy,
    retry,
)
from mercato_shared.tracing import enabled as tracing_enabled
from payment_service.settings import PaymentSettings

log = logging.getLogger(__name__)


class ProviderUnavailableError(ConnectionError):
    """No usable answer: unreachable, timed out, 5xx after retries, or the breaker is open.

    A ConnectionError (an OSError) on purpose: the shared consumer treats it as transient and
    retries the event rather than dead-lettering it, so a capture or refund is never lost.
    """


class ProviderRejectedError(Exception):
    """The processor refused the request (4xx); repeating it cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"processor refused the request ({status}): {detail}")
        self.status = status


class _ServerError(Exception):
    """A 5xx answer: retried, and counted against the breaker."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"processor answered {response.status_code}: {response.text[:200]}")


class SandboxAuthorization(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    order_id: str
    status: str  # authorized | declined | captured | voided
    amount: int
    currency: str
    decline_reason: str | None = None
    captured: int = 0
    refunded: int = 0


class SandboxRefund(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    authorization_id: str
    amount: int


class SandboxKeyVoid(BaseModel):
    model_config = ConfigDict(extra="ignore")

    idempotency_key: str
    authorization: SandboxAuthorization | None


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | _ServerError)


class SandboxClient:
    """One per process; its HTTP connection pool is opened on first use, in the running loop."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout: httpx.Timeout,
        max_connections: int,
        policy: RetryPolicy,
        budget: RetryBudget,
        breaker: CircuitBreaker,
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._limits = httpx.Limits(max_connections=max_connections)
        self._policy = policy
        self._budget = budget
        self.breaker = breaker
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: PaymentSettings) -> SandboxClient:
        breaker = CircuitBreaker(
            "payment-sandbox", settings.sandbox_breaker_config(), is_failure=_is_outage
        )
        breaker.on_transition(_log_transition)
        instrument_breaker(breaker, service=settings.service_name)
        return cls(
            base_url=settings.sandbox_url,
            timeout=httpx.Timeout(
                settings.sandbox_timeout_seconds, connect=settings.sandbox_connect_timeout_seconds
            ),
            max_connections=settings.sandbox_max_connections,
            policy=settings.sandbox_retry_policy(),
            budget=settings.sandbox_retry_budget(),
            breaker=breaker,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def authorize(
        self, *, key: str, order_id: str, amount: int, currency: str
    ) -> SandboxAuthorization:
        """Hold ``amount``; the answer says authorized or declined (or voided, if given up)."""
        body = {"order_id": order_id, "amount": amount, "currency": currency}
        data = await self._request("POST", "/v1/authorizations", json=body, key=key)
        return SandboxAuthorization.model_validate(data)

    async def capture(self, authorization_id: str) -> SandboxAuthorization:
        path = f"/v1/authorizations/{quote(authorization_id, safe='')}/capture"
        return SandboxAuthorization.model_validate(await self._request("POST", path))

    async def void(self, authorization_id: str) -> SandboxAuthorization:
        path = f"/v1/authorizations/{quote(authorization_id, safe='')}/void"
        return SandboxAuthorization.model_validate(await self._request("POST", path))

    async def refund(self, authorization_id: str, *, key: str, amount: int) -> SandboxRefund:
        path = f"/v1/authorizations/{quote(authorization_id, safe='')}/refunds"
        data = await self._request("POST", path, json={"amount": amount}, key=key)
        return SandboxRefund.model_validate(data)

    async def void_key(self, key: str) -> SandboxKeyVoid:
        """Void whatever was authorized under ``key`` and refuse later authorizations with it.

        Not guarded by the breaker: this is how an authorization given up on is made safe, and
        the breaker is most likely open exactly then. Retries and the budget still bound it.
        """
        path = f"/v1/idempotency-keys/{quote(key, safe='')}/void"
        return SandboxKeyVoid.model_validate(await self._request("POST", path, guarded=False))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        key: str | None = None,
        guarded: bool = True,
    ) -> Any:
        headers = {} if key is None else {"Idempotency-Key": key}

        async def send() -> httpx.Response:
            response = await self._http().request(method, path, json=json, headers=headers)
            if response.status_code >= 500:
                raise _ServerError(response)
            return response

        async def attempt() -> httpx.Response:
            return await (self.breaker.call(send) if guarded else send())

        try:
            response = await retry(
                attempt, policy=self._policy, budget=self._budget, retryable=_is_outage
            )
        except (httpx.TransportError, _ServerError, BreakerOpenError) as exc:
            raise ProviderUnavailableError(f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 400:
            raise ProviderRejectedError(response.status_code, response.text[:500])
        return response.json()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url, timeout=self._timeout, limits=self._limits
            )
            if tracing_enabled():
                from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

                HTTPXClientInstrumentor.instrument_client(self._client)
        return self._client


def _log_transition(name: str, old: BreakerState, new: BreakerState) -> None:
    log.warning("circuit breaker %s: %s -> %s", name, old, new)
