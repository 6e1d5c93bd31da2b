"""The Prometheus rules: generated files current, `promtool check rules` clean, only metrics the
code registers, loaded by compose's Prometheus, and every alert unit-tested with
`promtool test rules`: it fires on the series that should fire it and stays quiet otherwise."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import order_service.app
from gateway.settings import GatewaySettings
from mercato_shared.events import CancelReason
from order_service.settings import OrderSettings
from tests.deploy.conftest import K8S, REPO
from tests.deploy.test_observability import CONFIG, metric_names, registered_metrics

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
GENERATOR = REPO / "deploy" / "prometheus" / "slo_rules.py"
PROMETHEUS_RULE = K8S / "base" / "prometheus-rules.yaml"
DOCS = REPO / "docs"
ORDERS_POST = 'service="order", method="POST", route="/api/v1/orders"'


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slo_rules", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while the class is made.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _groups() for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


# --- the files ---------------------------------------------------------------------------


def test_rule_files_are_generated_and_current() -> None:
    generator = _generator()
    assert RULES.read_text() == generator.render("rules"), "run `make rules`"
    assert PROMETHEUS_RULE.read_text() == generator.render("k8s"), "run `make rules`"
    # The PrometheusRule holds exactly the groups that Prometheus loads from the rule file.
    assert yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]["groups"] == _groups()
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert PROMETHEUS_RULE.name in kustomization["resources"]


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rules_name_only_registered_metrics() -> None:
    registered = registered_metrics()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = set().union(*registered.values()) | recorded
    used: set[str] = set()
    for rule in _rules():
        where = rule.get("alert") or rule["record"]
        names = metric_names(rule["expr"])
        # A constant (the objective) selects nothing; every other rule selects a metric.
        assert names or re.fullmatch(r"[\d.]+", rule["expr"]), where
        assert names <= known, f"{where}: not exported by any process: {sorted(names - known)}"
        used |= names
    assert recorded <= used | {"slo:objective:ratio"}, "a recording rule no rule uses"


def test_rules_filter_on_label_values_the_code_produces() -> None:
    exprs = "\n".join(rule["expr"] for rule in _rules())
    reasons = set(re.findall(r'reason=~"([^"]+)"', exprs)[0].split("|"))
    assert reasons <= {str(reason) for reason in CancelReason}
    assert set(re.findall(r'\bservice="([^"]+)"', exprs)) == {OrderSettings().service_name}
    paths = order_service.app.create_app().openapi()["paths"]
    assert set(re.findall(r'\broute="([^"]+)"', exprs)) <= paths.keys()
    assert "/api/v1/orders" in {route.prefix for route in GatewaySettings().routes}
    assert "post" in paths["/api/v1/orders"]
    assert "201" in paths["/api/v1/orders"]["post"]["responses"]


def test_compose_prometheus_loads_the_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    mounts = {
        REPO / source: target
        for source, target, *_ in (
            volume.split(":") for volume in compose["services"]["prometheus"]["volumes"]
        )
        if source.startswith("./")
    }
    target = Path(mounts[RULES])
    assert any(target.match(pattern) for pattern in config["rule_files"]), config["rule_files"]


def test_every_alert_has_a_runbook_and_every_slo_is_documented() -> None:
    operations = (DOCS / "operations.md").read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", operations, re.MULTILINE)
    }
    for name, alert in _alerts().items():
        anchor = alert["annotations"]["description"].rsplit("#", 1)[1].rstrip(".")
        assert anchor in headings, f"{name}: docs/operations.md has no section #{anchor}"
        assert f"`{name}`" in operations, f"{name}: not named in docs/operations.md"
    observability = (DOCS / "observability.md").read_text()
    for slo in _generator().SLOS:
        assert f"`{slo.name}`" in observability, slo.name


# --- promtool test rules -----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """At ``at``, ``alert`` fires once per label set in ``firing`` (its rule's labels aside)."""

    at: str
    alert: str
    firing: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """Input series, the alerts expected of them and, optionally, recorded values at 10m."""

    name: str
    series: dict[str, str]
    checks: list[Check]
    recorded: dict[str, float] = field(default_factory=dict)


def _counter(name: str, labels: str) -> str:
    return f"{name}{{{labels}}}"


API_OK = 'gateway_requests_total{route="/api/v1/orders", method="POST", status="201"}'
API_5XX = 'gateway_requests_total{route="/api/v1/orders", method="POST", status="503"}'
POST_COUNT = f"mercato_http_request_duration_seconds_count{{{ORDERS_POST}}}"
POST_FAST = f'mercato_http_request_duration_seconds_bucket{{{ORDERS_POST}, le="0.5"}}'
GET_COUNT = (
    'mercato_http_request_duration_seconds_count{service="order", method="GET", '
    'route="/api/v1/orders"}'
)
GET_FAST = (
    'mercato_http_request_duration_seconds_bucket{service="order", method="GET", '
    'route="/api/v1/orders", le="0.5"}'
)
TERMINAL_COUNT = 'mercato_saga_time_to_terminal_seconds_count{status="CONFIRMED"}'
TERMINAL_FAST = 'mercato_saga_time_to_terminal_seconds_bucket{status="CONFIRMED", le="5.0"}'
CONFIRMED = 'mercato_saga_outcomes_total{status="CONFIRMED"}'


def _outcome(reason: str) -> str:
    return f'mercato_saga_outcomes_total{{status="CANCELLED", reason="{reason}"}}'


def _burn(
    slo: str, bad: dict[str, str], slow_only: dict[str, str], good: dict[str, str]
) -> list[Case]:
    """An SLO's burn alerts: a fast burn pages (and tickets an hour on), a slow one only
    tickets, a burn within budget does neither."""
    fast, slow = f"{slo}BudgetBurnFast", f"{slo}BudgetBurnSlow"
    cases = [
        Case(
            f"{slo}: fast burn",
            bad,
            [Check("10m", fast, [{}]), Check("10m", slow), Check("100m", slow, [{}])],
        ),
        Case(f"{slo}: within budget", good, [Check("10m", fast), Check("280m", slow)]),
    ]
    if slow_only:
        cases.append(
            Case(f"{slo}: slow burn", slow_only, [Check("100m", fast), Check("100m", slow, [{}])])
        )
    return cases


CASES = [
    Case(
        "recorded ratios: a tenth of the requests fail",
        {API_OK: "0+90x20", API_5XX: "0+10x20", CONFIRMED: "0+10x20"},
        [],
        recorded={
            'slo:sli_error:ratio_rate5m{slo="api-availability"}': 0.1,
            # No bad outcome yet is a bad share of zero, not no answer.
            'slo:sli_error:ratio_rate5m{slo="saga-completion"}': 0.0,
            'slo:objective:ratio{slo="saga-completion"}': 0.995,
        },
    ),
    *_burn(
        "ApiAvailability",
        bad={API_OK: "0+100x180", API_5XX: "0+10x180"},
        # 0.5 % bad: over 3x the 0.1 % budget, under 6x.
        slow_only={API_OK: "0+1000x180", API_5XX: "0+5x180"},
        good={API_OK: "0+2000x300", API_5XX: "0+1x300"},
    ),
    *_burn(
        "OrderPlacementLatency",
        bad={POST_COUNT: "0+100x180", POST_FAST: "0+80x180"},
        slow_only={POST_COUNT: "0+1000x180", POST_FAST: "0+960x180"},
        # Slow GETs of the same route are not order placements.
        good={
            POST_COUNT: "0+1000x300",
            POST_FAST: "0+999x300",
            GET_COUNT: "0+100x300",
            GET_FAST: "0x300",
        },
    ),
    *_burn(
        "OrderTimeToTerminal",
        bad={TERMINAL_COUNT: "0+10x180", TERMINAL_FAST: "0+5x180"},
        slow_only={TERMINAL_COUNT: "0+1000x180", TERMINAL_FAST: "0+960x180"},
        good={TERMINAL_COUNT: "0+100x300", TERMINAL_FAST: "0+100x300"},
    ),
    *_burn(
        "SagaCompletion",
        bad={CONFIRMED: "0+90x180", _outcome("deadline_exceeded"): "0+10x180"},
        slow_only={CONFIRMED: "0+1000x180", _outcome("payment_unavailable"): "0+20x180"},
        # Out of stock and declined are the saga's answers, not failures.
        good={
            CONFIRMED: "0+100x300",
            _outcome("out_of_stock"): "0+30x300",
            _outcome("payment_declined"): "0+20x300",
        },
    ),
    Case(
        "SagaStalled: orders placed, no outcome at all",
        {_counter("mercato_http_requests_total", f'{ORDERS_POST}, status="201"'): "0+5x60"},
        [Check("25m", "SagaStalled", [{}])],
    ),
    Case(
        "SagaStalled: orders placed, outcomes stopped",
        {
            _counter("mercato_http_requests_total", f'{ORDERS_POST}, status="201"'): "0+5x60",
            CONFIRMED: "100x60",
        },
        [Check("25m", "SagaStalled", [{}])],
    ),
    Case(
        "SagaStalled: orders placed and finished, a first outcome after a restart too",
        {
            _counter("mercato_http_requests_total", f'{ORDERS_POST}, status="201"'): "0+5x60",
            CONFIRMED: "0+5x60",
            _outcome("out_of_stock"): "_x20 1x40",
        },
        [Check("25m", "SagaStalled"), Check("50m", "SagaStalled")],
    ),
    Case(
        "SagaStalled: no orders placed",
        {_counter("mercato_http_requests_total", f'{ORDERS_POST}, status="201"'): "10x60"},
        [Check("25m", "SagaStalled")],
    ),
    Case(
        "DeadLetters: a counter that grows",
        {'mercato_dead_letters_total{service="inventory", topic="orders"}': "0x5 1x40"},
        [
            Check("10m", "DeadLetters", [{"service": "inventory", "topic": "orders"}]),
            Check("30m", "DeadLetters"),
        ],
    ),
    Case(
        "DeadLetters: a series that appears at its first dead letter",
        {'mercato_dead_letters_total{service="payment", topic="orders"}': "_x5 1x40"},
        [
            Check("3m", "DeadLetters"),
            Check("10m", "DeadLetters", [{"service": "payment", "topic": "orders"}]),
            Check("30m", "DeadLetters"),
        ],
    ),
    Case(
        "DeadLetters: old dead letters only",
        {'mercato_dead_letters_total{service="payment", topic="orders"}': "3x40"},
        [Check("30m", "DeadLetters")],
    ),
    Case(
        "OutboxStuck: the oldest row keeps ageing",
        {
            'mercato_outbox_oldest_age_seconds{service="order", instance="a"}': "0+60x10",
            'mercato_outbox_oldest_age_seconds{service="order", instance="b"}': "0+60x10",
        },
        [Check("2m", "OutboxStuck"), Check("5m", "OutboxStuck", [{"service": "order"}])],
    ),
    Case(
        "OutboxStuck: rows go out, one slow round",
        {
            'mercato_outbox_oldest_age_seconds{service="order"}': "0.2 0.1 45 0.3 0.1 0.2 0.1",
            'mercato_outbox_oldest_age_seconds{service="payment"}': "0x6",
        },
        [Check("5m", "OutboxStuck")],
    ),
    Case(
        "ConsumerLagGrowing: lag climbs",
        {
            'mercato_consumer_lag{service="payment", topic="orders", partition="0"}': "0+50x40",
            'mercato_consumer_lag{service="payment", topic="orders", partition="1"}': "0x40",
        },
        [
            Check("8m", "ConsumerLagGrowing"),
            Check("20m", "ConsumerLagGrowing", [{"service": "payment", "topic": "orders"}]),
        ],
    ),
    Case(
        "ConsumerLagGrowing: a backlog draining, a revoked partition's last figure",
        {
            'mercato_consumer_lag{service="payment", topic="orders", partition="0"}': "5000-50x40",
            'mercato_consumer_lag{service="order", topic="replies", partition="1"}': "3000x40",
            'mercato_consumer_lag{service="order", topic="replies", partition="2"}': "2x40",
        },
        [Check("20m", "ConsumerLagGrowing")],
    ),
    Case(
        "BreakerOpen: open for minutes",
        {'mercato_breaker_state{service="payment", dependency="sandbox"}': "0 0 2x10"},
        [
            Check("4m", "BreakerOpen"),
            Check("8m", "BreakerOpen", [{"service": "payment", "dependency": "sandbox"}]),
        ],
    ),
    Case(
        "BreakerOpen: brief openings and half-open probes",
        {'mercato_breaker_state{service="payment", dependency="sandbox"}': "0 2 1 2 1 0 0 0 0 0"},
        [Check("8m", "BreakerOpen")],
    ),
    Case(
        "GatewayUpstreamBreakerOpen: an upstream instance's breaker stays open",
        {
            'gateway_upstream_breaker_open{instance="gateway:8080", '
            'exported_instance="http://order-api:8001/"}': "0 1x10",
            'gateway_upstream_breaker_open{instance="gateway:8080", '
            'exported_instance="http://inventory-api:8002/"}': "0x10",
        },
        [
            Check(
                "8m",
                "GatewayUpstreamBreakerOpen",
                [{"instance": "gateway:8080", "exported_instance": "http://order-api:8001/"}],
            )
        ],
    ),
    Case(
        "GatewayUpstreamBreakerOpen: one short opening",
        {'gateway_upstream_breaker_open{instance="http://order-api:8001/"}': "0 1 0 0 0 0 0 0 0"},
        [Check("8m", "GatewayUpstreamBreakerOpen")],
    ),
    Case(
        "RateLimitRedisFallback: decided locally",
        {
            'gateway_ratelimit_decisions_total{instance="gateway:8080", policy="user", '
            'decision="allowed", source="local"}': "0+10x20",
        },
        [Check("10m", "RateLimitRedisFallback", [{"instance": "gateway:8080", "source": "local"}])],
    ),
    Case(
        "RateLimitRedisFallback: Redis decides, an earlier fallback is over",
        {
            'gateway_ratelimit_decisions_total{instance="gateway:8080", policy="user", '
            'decision="allowed", source="redis"}': "0+100x20",
            'gateway_ratelimit_decisions_total{instance="gateway:8080", policy="user", '
            'decision="allowed", source="local"}': "5x20",
        },
        [Check("10m", "RateLimitRedisFallback")],
    ),
    Case(
        "RateLimitRedisFallback: refusals Redis gave, remembered by the gateway",
        {
            'gateway_ratelimit_decisions_total{instance="gateway:8080", policy="user", '
            'decision="refused", source="cached"}': "0+50x20",
        },
        [Check("10m", "RateLimitRedisFallback")],
    ),
]


def _unit_test(case: Case) -> dict[str, Any]:
    """The promtool test file for one case; expected annotations are the rules' own."""
    alerts = _alerts()
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": case.name,
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": check.at,
                        "alertname": check.alert,
                        "exp_alerts": [
                            {
                                "exp_labels": alerts[check.alert]["labels"] | labels,
                                "exp_annotations": alerts[check.alert]["annotations"],
                            }
                            for labels in check.firing
                        ],
                    }
                    for check in case.checks
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "10m",
                        "exp_samples": [{"labels": expr, "value": value}],
                    }
                    for expr, value in case.recorded.items()
                ],
            }
        ],
    }


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_alert_rules(case: Case, promtool: str, tmp_path: Path) -> None:
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(_unit_test(case), sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_seen_firing_and_quiet() -> None:
    firing = {c.alert for case in CASES for c in case.checks if c.firing}
    quiet = {c.alert for case in CASES for c in case.checks if not c.firing}
    assert firing == set(_alerts()), sorted(set(_alerts()) ^ firing)
    assert quiet == set(_alerts()), sorted(set(_alerts()) ^ quiet)
