"""The gateway's ASGI application: the request pipeline for routed paths, FastAPI for its own.

Pipeline: route → refuse tokens in URLs → authenticate → authorize → rate limit → cache
(on routes that have one) → forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from gateway.access import AccessPolicy, Verdict
from gateway.apidocs import PublicDocument, docs_router, own_document
from gateway.asgi import Message, Receive, Scope, Send, send_problem
from gateway.auth import AuthenticationError, Authenticator, KeysUnavailableError
from gateway.cache import route_caches
from gateway.clientip import client_ip, parse_networks
from gateway.compose import DETAILS, order_details
from gateway.identity import IdentitySigner
from gateway.proxy import Forwarder, header, request_id_of
from gateway.ratelimit import RateLimiter, rate_limit_headers, redis_client
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstream, UpstreamTable
from mercato_shared.health import health_router
from mercato_shared.identity import IDENTITY_HEADER, Identity
from mercato_shared.identity_keys import SigningKeyFile
from mercato_shared.logs import LineLogger
from mercato_shared.metrics import (
    EventLoopLag,
    StatusRecorder,
    event_loop_lag_gauge,
    expose_metrics,
    join_multiprocess_metrics,
    leave_multiprocess_metrics,
)
from mercato_shared.problems import install_problem_handlers, problem_response
from mercato_shared.resilience import BreakerState, RetryBudget
from mercato_shared.tracing import FASTAPI_TELEMETRY, instrument_asgi
from mercato_shared.tracing import enabled as tracing_enabled

log = logging.getLogger(__name__)
# One line per request, written here rather than by uvicorn's access logger: the gateway
# knows the route, status and duration already, and the lean path costs a fraction.
access_log = LineLogger("gateway.access")


def client_trace_configs() -> list[aiohttp.TraceConfig]:
    """Client spans (and traceparent headers) on forwarded requests, when tracing is on."""
    if not tracing_enabled():
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    return [create_trace_config()]


# Names of query parameters through which clients sometimes send tokens; URLs end up in logs
# and browser histories, so a token there is refused rather than ignored.
TOKEN_PARAMETERS = frozenset({"access_token", "token", "id_token", "jwt"})
ANONYMOUS = Identity(subject="anonymous", roles=frozenset())


class Gateway:
    """Plain ASGI at the top: routed requests never pay for FastAPI's routing and validation."""

    def __init__(
        self, settings: GatewaySettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.breaker_state = Gauge(
            "gateway_upstream_breaker_open",
            "1 while an upstream instance's breaker is open or half-open",
            ["instance"],
            registry=self.registry,
            # Each process has its own breakers: 1 while any live process's is open.
            multiprocess_mode="livemax",
        )
        self.breaker_transitions = Counter(
            "gateway_upstream_breaker_transitions",
            "Breaker state changes per upstream instance",
            ["instance", "to"],
            registry=self.registry,
        )
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route prefix and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer a routed request (headers sent)",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.loop_lag = event_loop_lag_gauge(self.registry)
        self.refusals = Counter(
            "gateway_http_refusals",
            "Requests refused by the gateway's HTTP limits, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.upstreams = UpstreamTable(
            [
                Upstream(
                    config,
                    retry_budget=RetryBudget(
                        ratio=settings.retry_budget_ratio,
                        min_per_second=settings.retry_budget_min_per_second,
                    ),
                    on_breaker_transition=self._on_breaker_transition,
                )
                for config in settings.routes
            ]
        )
        self.caches = route_caches(self.upstreams, registry=self.registry)
        self._durations = {u.prefix: self.duration.labels(u.prefix) for u in self.upstreams}
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self.access = AccessPolicy(settings.access)
        self.policies = {policy.name: policy for policy in settings.rate_limits}
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self._signer: IdentitySigner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._forwarder: Forwarder | None = None
        self._authenticator: Authenticator | None = None
        self._limiter: RateLimiter | None = None
        # FastAPI's own document and page are replaced by the public ones (gateway.apidocs).
        self.admin = FastAPI(
            title="Mercato gateway",
            lifespan=self._lifespan,
            telemetry=FASTAPI_TELEMETRY,
            openapi_url=None,
            docs_url=None,
            redoc_url=None,
        )
        install_problem_handlers(self.admin)
        self.admin.add_exception_handler(404, self._unknown_path)
        # Ready without Redis too: rate limiting then falls back per process.
        self.admin.include_router(health_router({}))
        self.document = PublicDocument(
            settings=settings,
            access=self.access,
            upstreams=self.upstreams,
            session=lambda: self._session,
            own=lambda: own_document(self.admin.routes),
        )
        self.admin.include_router(docs_router(self.document))
        expose_metrics(self.admin, self.registry)

    async def _unknown_path(self, request: Request, _: Exception) -> JSONResponse:
        """A path no route serves: a 404 that says where the API is, for a guessed URL."""
        prefixes = ", ".join(sorted(upstream.prefix for upstream in self.upstreams))
        return problem_response(
            404,
            detail=f"no route for {request.url.path}; the API's routes start with {prefixes}",
        )

    def _on_breaker_transition(self, name: str, _: BreakerState, to: BreakerState) -> None:
        log.warning("breaker of %s is now %s", name, to)
        self.breaker_state.labels(name).set(0 if to is BreakerState.CLOSED else 1)
        self.breaker_transitions.labels(name, str(to)).inc()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        settings = self.settings
        join_multiprocess_metrics()
        self._signer = IdentitySigner(
            SigningKeyFile(settings.identity_private_key_file),
            issuer=settings.identity_issuer,
            ttl_seconds=settings.identity_ttl_seconds,
        )
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_connections, keepalive_timeout=30, ttl_dns_cache=60
        )
        redis = redis_client(
            settings.redis_url.get_secret_value(), timeout=settings.redis_timeout_seconds
        )
        async with aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            trace_configs=client_trace_configs(),
            # An upstream's answer with a longer status line or header, or more headers, is
            # refused (a 502) rather than passed on to the client.
            max_line_size=settings.upstream_max_header_bytes,
            max_field_size=settings.upstream_max_header_bytes,
            max_headers=settings.upstream_max_headers,
        ) as session:
            self._session = session
            self._forwarder = Forwarder(
                session,
                max_body_bytes=settings.max_body_bytes,
                oversized_answers=self.refusals.labels("upstream_headers_too_large"),
            )
            self._authenticator = Authenticator(settings.auth_issuers, lambda: session)
            self._limiter = RateLimiter(
                redis,
                on_redis_error=settings.rate_limit_on_redis_error,
                key_prefix=settings.redis_key_prefix,
                registry=self.registry,
            )
            checks = [
                asyncio.create_task(upstream.run_health_checks(session))
                for upstream in self.upstreams
            ]
            checks.append(EventLoopLag(self.loop_lag, service="gateway").start())
            try:
                yield
            finally:
                for task in checks:
                    task.cancel()
                await asyncio.gather(*checks, return_exceptions=True)
                self._forwarder = None
                await redis.aclose()
                # Here rather than at exit: uvicorn ends a process it stopped by signal
                # with that signal again, which skips exit handlers.
                leave_multiprocess_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            upstream = self.upstreams.match(scope["path"]) if self._forwarder else None
            if upstream is not None:
                await self._measured(scope, receive, send, upstream)
            else:
                await self._own(scope, receive, send)
            return
        await self.admin(scope, receive, send)

    async def _own(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway's own endpoints (health, metrics), logged like routed requests."""
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        try:
            await self.admin(scope, receive, recorder)
        finally:
            _log_access(scope, recorder.status, started, route=None, request_id=None)

    async def _measured(
        self, scope: Scope, receive: Receive, send: Send, upstream: Upstream
    ) -> None:
        started = time.perf_counter()
        status = 500
        duration = self._durations[upstream.prefix]
        request_id = request_id_of(scope)

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                duration.observe(time.perf_counter() - started)
            await send(message)

        try:
            await self._handle(scope, receive, observe, upstream, request_id)
        finally:
            key = (upstream.prefix, scope["method"], status)
            counter = self._request_counters.get(key)
            if counter is None:
                # Looking a labelled child up takes a lock and builds its label tuple; the
                # set of routes, methods and statuses is small, so children are kept.
                counter = self._request_counters[key] = self.requests.labels(
                    upstream.prefix, scope["method"], str(status)
                )
            counter.inc()
            _log_access(scope, status, started, route=upstream.prefix, request_id=request_id)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, upstream: Upstream, request_id: str
    ) -> None:
        if (
            scope.get("query_string")
            and TOKEN_PARAMETERS & parse_qs(scope["query_string"].decode("latin-1")).keys()
        ):
            await send_problem(send, 401, "tokens are accepted in the Authorization header only")
            return
        ip = client_ip(
            scope["client"][0] if scope.get("client") else None,
            [
                value.decode("latin-1")
                for name, value in scope["headers"]
                if name == b"x-forwarded-for"
            ],
            self.trusted_proxies,
        )
        identity = await self._authenticate(scope, send, upstream, ip)
        if identity is None:
            return
        method, path = scope["method"], scope["path"]
        verdict = self.access.decide(method, path, None if identity is ANONYMOUS else identity)
        if verdict is not Verdict.ALLOW:
            status = 401 if verdict is Verdict.UNAUTHENTICATED else 403
            detail = (
                "a bearer token is required" if status == 401 else "your roles do not allow this"
            )
            extra = [(b"www-authenticate", b"Bearer")] if status == 401 else None
            await send_problem(send, status, detail, headers=extra)
            return
        limit_headers = await self._rate_limit(send, upstream, identity, ip)
        if limit_headers is None:
            return
        assert self._signer is not None  # noqa: S101 - set in lifespan with the forwarder
        token = self._signer.token_for(identity)
        response_headers = [*limit_headers, (b"x-request-id", request_id.encode())]
        details = DETAILS.match(path)
        if details is not None and method == "GET" and self._session is not None:
            await order_details(
                send,
                session=self._session,
                upstreams=self.upstreams,
                order_id=details["order_id"],
                headers={IDENTITY_HEADER: token, "x-request-id": request_id},
                response_headers=response_headers,
            )
            return
        assert self._forwarder is not None  # noqa: S101
        forward = self._forwarder.forward
        if (cache := self.caches.get(upstream.prefix)) is not None:
            forward = functools.partial(cache.forward, forward)
        await forward(
            scope,
            receive,
            send,
            upstream=upstream,
            identity=token,
            request_id=request_id,
            client_ip=ip,
            response_headers=response_headers,
        )

    async def _rate_limit(
        self, send: Send, upstream: Upstream, identity: Identity, ip: str
    ) -> list[tuple[bytes, bytes]] | None:
        """The RateLimit headers for an admitted request, or None once a 429 is sent."""
        if not upstream.config.rate_limited:
            return []
        authenticated = identity is not ANONYMOUS
        policy_name = upstream.config.rate_limit or ("user" if authenticated else "anonymous")
        assert self._limiter is not None  # noqa: S101 - set in lifespan with the forwarder
        decision = await self._limiter.check(
            self.policies[policy_name],
            f"user:{identity.subject}" if authenticated else f"ip:{ip}",
        )
        limit_headers = rate_limit_headers(decision)
        if not decision.allowed:
            await send_problem(
                send, 429, "rate limit exceeded", slug="rate-limited", headers=limit_headers
            )
            return None
        return limit_headers

    async def _authenticate(
        self, scope: Scope, send: Send, upstream: Upstream, ip: str
    ) -> Identity | None:
        """The caller's identity, ANONYMOUS without a token, or None once a 401/429/503 is sent.

        A bad token counts against its client IP's anonymous limit before it is refused: a
        flood of forged tokens is limited like anonymous traffic, not answered for free.
        """
        authorization = header(scope, b"authorization")
        if authorization is None or not authorization.strip():
            return ANONYMOUS
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        assert self._authenticator is not None  # noqa: S101
        try:
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationError("expected 'Authorization: Bearer <token>'")
            return await self._authenticator.authenticate(token.strip())
        except AuthenticationError as exc:
            limit_headers = await self._rate_limit(send, upstream, ANONYMOUS, ip)
            if limit_headers is None:
                return None
            # A bad token is refused even on public routes: silently downgrading it to
            # anonymous would hide a client's broken login.
            await send_problem(
                send,
                401,
                f"invalid token: {exc}",
                slug="invalid-token",
                headers=[(b"www-authenticate", b'Bearer error="invalid_token"'), *limit_headers],
            )
        except KeysUnavailableError as exc:
            log.error("cannot verify tokens: %s", exc)
            await send_problem(
                send, 503, "token keys are unavailable", headers=[(b"retry-after", b"5")]
            )
        return None


def _log_access(
    scope: Scope, status: int, started: float, *, route: str | None, request_id: str | None
) -> None:
    """The request's access line: method, target, status, time to the end of the answer."""
    target = scope["path"]
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    client = scope.get("client")
    access_log.info(
        f"{scope['method']} {target} {status}",
        {
            "method": scope["method"],
            "path": target,
            "status": status,
            "route": route,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "peer": client[0] if client else None,
            "request_id": request_id,
        },
    )


def create_app(settings: GatewaySettings | None = None, gateway: Gateway | None = None) -> ASGIApp:
    """The gateway (``gateway`` if given), wrapped in CORS handling when origins are set."""
    settings = settings or GatewaySettings()
    gateway = gateway or Gateway(settings)
    if not settings.cors_allow_origins:
        return instrument_asgi(gateway)
    return CORSMiddleware(
        instrument_asgi(gateway),
        allow_origins=settings.cors_allow_origins,
        allow_methods=settings.cors_allow_methods,
        allow_headers=settings.cors_allow_headers,
        max_age=settings.cors_max_age_seconds,
    )
