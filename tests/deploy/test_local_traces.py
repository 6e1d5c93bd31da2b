"""The native stack's trace backend, checked without building it: Jaeger's generated
configuration listens on loopback only, on ports the stack leaves free, and the endpoint
services.sh gives every process makes its exporter post where that receiver listens."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.deploy.conftest import REPO

LOCAL = REPO / "deploy" / "local"
JAEGER = LOCAL / "jaeger.sh"
SERVICES = LOCAL / "services.sh"
# The port table of docs/architecture.md plus Kafka's controller listener: Jaeger must take
# none of them.
STACK_PORTS = {8080, 8001, 8002, 8003, 8004, 9101, 9102, 9103, 9104, 8090, 1025, 8025}
STACK_PORTS |= {5432, 6379, 9092, 9093}


def _run(script: Path, command: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", str(script), command],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The scripts' environment: a scratch state dir, no tracing set by whoever runs pytest."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MERCATO_"))}
    return base | {"MERCATO_STATE_DIR": str(tmp_path / "state")}


def _config(env: dict[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_run(JAEGER, "config", env))
    return config


def _endpoints(node: object, path: str = "") -> dict[str, str]:
    """Every `endpoint` value in the configuration, by its dotted path."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "endpoint":
                found[where] = str(value)
            else:
                found |= _endpoints(value, where)
    return found


def _exported(env: dict[str, str]) -> dict[str, str]:
    """What `services.sh env` says start exports to every process."""
    lines = _run(SERVICES, "env", env).splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def test_every_listener_is_on_loopback(env: dict[str, str]) -> None:
    config = _config(env)
    endpoints = _endpoints(config)

    assert set(endpoints) == {
        "receivers.otlp.protocols.grpc.endpoint",
        "receivers.otlp.protocols.http.endpoint",
        "extensions.jaeger_query.http.endpoint",
        "extensions.jaeger_query.grpc.endpoint",
    }
    assert all(value.startswith("127.0.0.1:") for value in endpoints.values()), endpoints
    # Components not in this list may open listeners on 0.0.0.0 by default: a new one
    # has to be bound explicitly above before it is switched on.
    service = config["service"]
    assert service["extensions"] == ["jaeger_storage", "jaeger_query"]
    assert service["pipelines"]["traces"]["receivers"] == ["otlp"]
    assert service["telemetry"]["metrics"]["level"] == "none"
    assert "memory" in config["extensions"]["jaeger_storage"]["backends"]["memory_store"]


def test_ports_leave_the_stack_alone(env: dict[str, str]) -> None:
    ports = {int(value.rsplit(":", 1)[1]) for value in _endpoints(_config(env)).values()}

    assert len(ports) == 4
    assert not ports & STACK_PORTS
    # The ports services.sh starts its processes on, in case the table above falls behind.
    declared = re.findall(r"\[[a-z-]+\]=(\d+)", SERVICES.read_text())
    assert not ports & {int(port) for port in declared}
    # OTLP keeps the ports docs/architecture.md gives it, as the compose stack's collector does.
    otlp = _config(env)["receivers"]["otlp"]["protocols"]
    assert (otlp["grpc"]["endpoint"], otlp["http"]["endpoint"]) == (
        "127.0.0.1:4317",
        "127.0.0.1:4318",
    )


def _fake_cached_build(env: dict[str, str], tools: Path) -> dict[str, str]:
    version = re.search(r"^JAEGER_MODULE_VERSION=(\S+)$", JAEGER.read_text(), re.MULTILINE)
    assert version
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "jaeger").write_text("#!/bin/sh\n")
    (tools / "bin" / "jaeger").chmod(0o755)
    (tools / "bin" / f".jaeger-{version[1]}").touch()
    return env | {"MERCATO_TOOLS_DIR": str(tools)}


def test_traces_follow_the_cached_build_and_the_switch(env: dict[str, str], tmp_path: Path) -> None:
    env = env | {"MERCATO_TOOLS_DIR": str(tmp_path / "empty")}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in _exported(env)  # not built: no exporter

    cached = _fake_cached_build(env, tmp_path / "tools")
    assert _exported(cached)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    off = _exported(cached | {"MERCATO_TRACES": "off"})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in off
    # An endpoint of one's own (a collector elsewhere) wins and is passed on unchanged.
    own = _exported(cached | {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert own["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"


class _Receiver(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, self.headers["Content-Type"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_exported_endpoint_reaches_the_otlp_http_receiver(
    env: dict[str, str], receiver: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base URL, not .../v1/traces: the exporter appends the path Jaeger's receiver serves."""
    port = receiver.server_address[1]
    env = env | {"MERCATO_TRACES": "on", "MERCATO_JAEGER_OTLP_HTTP_PORT": str(port)}
    endpoint = _exported(env)["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert _config(env)["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"127.0.0.1:{port}"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    _Receiver.requests = []
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    provider.get_tracer("test").start_span("probe").end()
    provider.shutdown()

    assert _Receiver.requests == [("/v1/traces", "application/x-protobuf")]


def _trace_tool() -> ModuleType:
    """deploy/local/trace.py, which is a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("local_trace", LOCAL / "trace.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _span(span_id: str, process: str, name: str, start: int, parent: str | None = None) -> Any:
    references = [{"refType": "CHILD_OF", "spanID": parent}] if parent else []
    return {
        "spanID": span_id,
        "processID": process,
        "operationName": name,
        "startTime": start,
        "duration": 1000,
        "references": references,
    }


# Jaeger's /api/traces answer, trimmed to what the tool reads; the consumer span's parent is
# a span of another trace piece that the search did not return (so it shows as a root).
TRACE = {
    "traceID": "ab" * 16,
    "processes": {"p1": {"serviceName": "gateway"}, "p2": {"serviceName": "order-worker"}},
    "spans": [
        _span("3", "p2", "orders publish", 3_000, parent="1"),
        _span("1", "p1", "POST /api/v1/orders", 1_000),
        _span("2", "p1", "POST", 2_000, parent="1"),
        _span("4", "p2", "payments process", 9_000, parent="missing"),
    ],
}


class _Jaeger(BaseHTTPRequestHandler):
    searches: ClassVar[list[dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self.searches.append(query)
        hit = query.get("service") == ["inventory-worker"]
        body = json.dumps({"data": [TRACE] if hit else None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_make_trace_finds_an_order_and_prints_its_tree() -> None:
    tool = _trace_tool()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jaeger)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Jaeger.searches = []
        trace = tool.find_trace(f"http://127.0.0.1:{server.server_address[1]}", "order-7")
    finally:
        server.shutdown()
        server.server_close()

    # Workers are searched in saga order until one knows the order id.
    assert [q["service"] for q in _Jaeger.searches] == [["order-worker"], ["inventory-worker"]]
    assert json.loads(_Jaeger.searches[0]["tags"][0]) == {"mercato.order_id": "order-7"}
    lines = tool.render(trace)
    assert lines[0] == f"trace {'ab' * 16}: 4 spans in gateway, order-worker"
    assert [line.split(" ms  ", 2)[2] for line in lines[1:]] == [
        "gateway: POST /api/v1/orders",
        "  gateway: POST",
        "  order-worker: orders publish",
        "order-worker: payments process",
    ]
