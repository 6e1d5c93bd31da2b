"""The observability profile of docker-compose.yml: collector, Jaeger, Prometheus, Grafana.

Nothing here starts a container; the checks tie the configuration files to the compose file
and to the metrics the code really registers, so that a renamed metric, a moved port or a new
worker shows up as a failing test rather than as an empty panel.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

import inventory_service.app
import notification_service.app
import order_service.app
import payment_service.app
from gateway.app import Gateway
from gateway.ratelimit import RateLimiter, redis_client
from gateway.settings import GatewaySettings
from inventory_service.settings import InventorySettings
from mercato_shared import metrics
from mercato_shared.events import CATALOGUE
from notification_service.settings import NotificationSettings
from order_service.models import OrderStatus
from order_service.settings import OrderSettings
from payment_service.settings import PaymentSettings
from tests.deploy.conftest import REPO

PROFILE = "observability"
BACKENDS = {"otel-collector", "jaeger", "prometheus", "grafana"}
CONFIG = REPO / "deploy" / "compose" / "observability"
DASHBOARD = CONFIG / "grafana" / "dashboards" / "mercato.json"
SERVICE_APPS = (
    order_service.app,
    inventory_service.app,
    payment_service.app,
    notification_service.app,
)

# Series that prometheus-client exposes for each metric type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
# PromQL words that look like metric names but are not.
GROUPING_WORDS = ("by", "without", "on", "ignoring", "group_left", "group_right")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", *GROUPING_WORDS}
GROUPING = rf"\b(?:{'|'.join(GROUPING_WORDS)})\s*\([^)]*\)"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _families(families: Iterable[Metric]) -> dict[str, set[str]]:
    """Metric family name -> the series names it is exposed as."""
    return {f.name: {f.name + suffix for suffix in SUFFIXES[f.type]} for f in families}


def registered_metrics() -> dict[str, set[str]]:
    """Every metric family the apis, the workers and the gateway export."""
    shared = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    families = _families(family for metric in shared for family in metric.describe())
    registry = CollectorRegistry()
    gateway = Gateway(GatewaySettings(), registry)
    # The limiter registers its counters on the gateway's registry when the gateway starts;
    # building one (no connection is made) does the same here.
    redis = redis_client("redis://127.0.0.1:6379/0")
    RateLimiter(redis, registry=gateway.registry)
    asyncio.run(redis.aclose())
    families |= _families(registry.collect())
    assert {"mercato_http_requests", "gateway_requests"} <= families.keys()
    return families


@pytest.fixture(scope="module")
def registered() -> dict[str, set[str]]:
    """Every metric family the apis, the workers and the gateway export."""
    return registered_metrics()


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords aside)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(GROUPING, " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\(?)", expr):
        name, call = match.groups()
        if not call and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every Prometheus query of the dashboard, variables included."""
    found = [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("datasource", panel.get("datasource", {})).get("type") == "prometheus"
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            if inner := re.fullmatch(r"label_values\((.+),\s*\w+\)", query):
                query = inner.group(1)
            found.append((f"variable {variable['name']}", query))
    return found


def _matchers(expr: str, label: str) -> set[str]:
    return set(re.findall(rf'\b{label}\s*=\s*"([^"]*)"', expr))


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose["services"][name]
    return service


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a container path of a service comes from in this repository (bind mounts)."""
    volume: str
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./") and (
            container_path == target or container_path.startswith(target.rstrip("/") + "/")
        ):
            return REPO / source / Path(container_path).relative_to(target)
    return None


def _scraped_processes(compose: dict[str, Any]) -> dict[str, int]:
    """compose service -> the port its /metrics is on: the gateway, every api and worker."""
    out = {}
    for name, service in compose["services"].items():
        if "profiles" in service:
            continue
        script = (service.get("entrypoint") or service.get("command") or [""])[0]
        environment = service.get("environment", {})
        if script == "gateway":
            out[name] = int(environment["GATEWAY_PORT"])
        for kind in ("api", "worker"):
            if script.endswith(f"-{kind}"):
                (port,) = (v for k, v in environment.items() if k.endswith(f"_{kind.upper()}_PORT"))
                out[name] = int(port)
    return out


# --- the dashboard -----------------------------------------------------------------------


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (le, service) (rate(a_seconds_bucket{route="/x", status=~"5.."}[$__rate_interval]))'
        " / on (service) group_left b_total or c * 0 > bool 0.5"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c"}


def test_dashboard_queries_only_registered_metrics(registered: dict[str, set[str]]) -> None:
    known = set().union(*registered.values())
    expressions = _expressions(_dashboard())
    assert len(expressions) >= 20
    for where, expr in expressions:
        names = metric_names(expr)
        assert names, f"{where}: selects no metric: {expr}"
        assert names <= known, f"{where}: not exported by any process: {sorted(names - known)}"


def test_every_registered_metric_is_on_the_dashboard(registered: dict[str, set[str]]) -> None:
    used = set().union(*(metric_names(expr) for _, expr in _expressions(_dashboard())))
    missing = sorted(family for family, series in registered.items() if not series & used)
    assert not missing, f"metrics without a panel: {missing}"


def test_dashboard_label_values_exist() -> None:
    """Values the queries filter on are ones the code produces."""
    event_types = {event_type for event_type, _ in CATALOGUE}
    apps: list[FastAPI] = [module.create_app() for module in SERVICE_APPS]
    services = {
        settings.service_name
        for settings in (
            OrderSettings(),
            InventorySettings(),
            PaymentSettings(),
            NotificationSettings(),
        )
    }
    routes = {path for app in apps for path in app.openapi()["paths"]}
    statuses = {str(status) for status in OrderStatus}
    for where, expr in _expressions(_dashboard()):
        assert _matchers(expr, "type") <= event_types, where
        assert _matchers(expr, "service") <= services, where
        assert _matchers(expr, "route") <= routes, where
        if "mercato_saga" in expr:
            assert _matchers(expr, "status") <= statuses, where


def test_dashboard_uses_the_provisioned_datasources() -> None:
    provisioned = _load(CONFIG / "grafana" / "provisioning" / "datasources" / "mercato.yaml")
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    dashboard = _dashboard()
    references = [
        reference
        for panel in _panels(dashboard)
        for reference in (
            panel.get("datasource"),
            *(t.get("datasource") for t in panel.get("targets", [])),
        )
        if reference
    ]
    references += [v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v]
    assert references
    for reference in references:
        assert uids.get(reference["uid"]) == reference["type"], reference
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


# --- Prometheus --------------------------------------------------------------------------


def test_prometheus_scrapes_every_process_on_its_compose_port(compose: dict[str, Any]) -> None:
    config = _load(CONFIG / "prometheus.yml")
    scraped: dict[str, dict[str, Any]] = {}
    for job in config["scrape_configs"]:
        for group in job.get("static_configs", []):
            for target in group["targets"]:
                scraped[target] = {"job": job, "labels": group.get("labels", {})}
    expected = _scraped_processes(compose)
    assert {"gateway", "order-api", "order-worker", "notification-worker"} <= expected.keys()
    assert len(expected) == 9
    for name, port in expected.items():
        target = f"{name}:{port}"
        assert target in scraped, f"Prometheus does not scrape {target}"
        # Every process serves /metrics, Prometheus's default path.
        assert scraped[target]["job"].get("metrics_path", "/metrics") == "/metrics", target
        assert scraped[target]["labels"].get("process") == name, target
    for target in scraped:
        host = target.split(":")[0]
        assert host == "localhost" or host in compose["services"], target


def test_grafana_rate_interval_matches_the_scrape_interval() -> None:
    config = _load(CONFIG / "prometheus.yml")
    provisioned = _load(CONFIG / "grafana" / "provisioning" / "datasources" / "mercato.yaml")
    (prometheus,) = (s for s in provisioned["datasources"] if s["type"] == "prometheus")
    assert prometheus["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]
    for job in config["scrape_configs"]:
        assert "scrape_interval" not in job, job["job_name"]


# --- collector and traces ----------------------------------------------------------------


def test_collector_sends_traces_to_jaeger(compose: dict[str, Any]) -> None:
    collector = _service(compose, "otel-collector")
    (config_path,) = (a.split("=", 1)[1] for a in collector["command"] if a.startswith("--config="))
    host_path = _host_path(collector, config_path)
    assert host_path is not None
    assert host_path.is_file()
    config = _load(host_path)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    assert set(config["service"].get("extensions", [])) <= set(config.get("extensions", {}))
    receivers = [config["receivers"][r] for r in pipeline["receivers"] if r.split("/")[0] == "otlp"]
    (otlp,) = receivers
    ports = {p.split(":")[-1] for p in collector["ports"]}
    assert otlp["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert otlp["protocols"]["http"]["endpoint"].endswith(":4318")
    assert {"4317", "4318"} <= ports
    (exporter,) = pipeline["exporters"]
    assert exporter.split("/")[0] in {"otlp", "otlp_grpc"}, exporter
    host, port = config["exporters"][exporter]["endpoint"].split(":")
    assert host == "jaeger"
    assert port == "4317", "Jaeger receives OTLP/gRPC on 4317"
    assert PROFILE in _service(compose, "jaeger")["profiles"]
    assert collector["depends_on"]["jaeger"]["condition"] == "service_healthy"


def test_traced_processes_export_to_the_collector_when_asked(compose: dict[str, Any]) -> None:
    env_file = CONFIG / "otel.env"
    variables = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    }
    # Passed through from the shell or .env; unset stays empty, and empty means no tracing.
    assert variables == {"OTEL_EXPORTER_OTLP_ENDPOINT": "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"}
    assert "http://otel-collector:4318" in env_file.read_text()
    # The processes that call setup_tracing are the ones Prometheus scrapes.
    traced = _scraped_processes(compose)
    with_env_file = set()
    for name, service in compose["services"].items():
        if "env_file" in service:
            with_env_file.add(name)
            (entry,) = service["env_file"]
            assert (REPO / entry["path"]).resolve() == env_file.resolve(), name
            assert entry["required"] is True, name
    assert with_env_file == traced.keys()


# --- Grafana -----------------------------------------------------------------------------


def test_grafana_provisioning_points_at_files_that_exist(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    provisioning = _host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning is not None
    assert provisioning.is_dir()
    datasources = _load(provisioning / "datasources" / "mercato.yaml")["datasources"]
    for source in datasources:
        match = re.fullmatch(r"http://([\w-]+):(\d+)/?", source["url"])
        assert match, source["url"]
        host, port = match.groups()
        assert PROFILE in _service(compose, host).get("profiles", []), host
        published = {p.rsplit(":", 1)[-1] for p in _service(compose, host).get("ports", [])}
        assert port in published, source["url"]
    (provider,) = _load(provisioning / "dashboards" / "mercato.yaml")["providers"]
    folder = _host_path(grafana, provider["options"]["path"])
    assert folder is not None
    assert (folder / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    home = _host_path(grafana, grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home is not None
    assert home.resolve() == DASHBOARD.resolve()


# --- the profile -------------------------------------------------------------------------


def test_backends_are_behind_the_profile_and_nothing_core_needs_them(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    in_profile = {name for name, s in services.items() if PROFILE in s.get("profiles", [])}
    assert in_profile == BACKENDS
    for name in BACKENDS:
        assert services[name]["profiles"] == [PROFILE], name
    for name, service in services.items():
        if name not in BACKENDS:
            assert not BACKENDS & set(service.get("depends_on", {})), name


def test_backends_converge_pinned_and_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in BACKENDS:
        service = services[name]
        image, _, tag = service["image"].rpartition(":")
        assert image, name
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a version, not {tag!r}"
        assert service["read_only"] is True, name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in BACKENDS, (name, dependency)
            healthy = "healthcheck" in services[dependency]
            expected = "service_healthy" if healthy else "service_started"
            assert condition["condition"] == expected, (name, dependency)
    # Everything but the collector (its image has no shell nor HTTP client) has a healthcheck.
    assert {n for n in BACKENDS if "healthcheck" in services[n]} == BACKENDS - {"otel-collector"}
    published = {p.split(":")[1] for n in BACKENDS for p in services[n].get("ports", [])}
    assert {"16686", "9090", "3000", "4317", "4318"} <= published
