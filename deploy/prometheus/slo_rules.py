"""Mercato's Prometheus rules: the SLOs' recording and burn-rate alert rules, and the alerts
that no SLO covers.

One definition, two files: ``rules`` prints the rule file that Prometheus loads (compose and
the native stack), ``k8s`` prints the same groups as a prometheus-operator ``PrometheusRule``.
``make rules`` writes both; a test fails when either is not what this prints.

Burn-rate alerts follow the multi-window, multi-burn-rate pattern of Google's SRE workbook
(chapter "Alerting on SLOs"): a page when 2 % of a 30-day budget goes in an hour or 5 % in six
hours, a ticket when 10 % goes in a day or in three days; each long window is paired with a
short one, so an alert stops soon after the burn does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import yaml

SLO_PERIOD = "30d"
# (severity, long window, short window, burn rate, for): the workbook's recommended table.
BURN_WINDOWS = (
    ("page", "1h", "5m", 14.4, "2m"),
    ("page", "6h", "30m", 6.0, "15m"),
    ("ticket", "1d", "2h", 3.0, "1h"),
    ("ticket", "3d", "6h", 1.0, "3h"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
RATIO = "slo:sli_error:ratio_rate"
ORDERS_POST = 'service="order", method="POST", route="/api/v1/orders"'
# The bounds below are bucket boundaries of the histograms (prometheus-client writes `le`
# as Go formats floats, which is also how Prometheus 3 normalises it).
ORDER_LATENCY_BOUND = "0.5"
TERMINAL_BOUND = "5.0"


@dataclass(frozen=True)
class Slo:
    """An objective over a ratio of bad to all events; ``{w}`` in the selectors is the window."""

    name: str
    alert: str
    objective: float
    bad: str
    total: str
    summary: str

    @property
    def budget(self) -> float:
        """The share of events that may be bad."""
        return round(1 - self.objective, 6)

    def ratio(self, window: str) -> str:
        """The bad share over ``window``: zero, not nothing, while no event was bad."""
        bad = self.bad.format(w=window)
        total = self.total.format(w=window)
        return f"(\n  {bad}\n  or vector(0)\n)\n/\n{total}\n"


SLOS = (
    Slo(
        name="api-availability",
        alert="ApiAvailability",
        objective=0.999,
        bad='sum(rate(gateway_requests_total{{status=~"5.."}}[{w}]))',
        total="sum(rate(gateway_requests_total[{w}]))",
        summary="99.9 % of the requests the gateway routes are answered without a 5xx",
    ),
    Slo(
        name="order-placement-latency",
        alert="OrderPlacementLatency",
        objective=0.99,
        bad=(
            f"sum(rate(mercato_http_request_duration_seconds_count{{{{{ORDERS_POST}}}}}[{{w}}]))"
            "\n  -\n  "
            f"sum(rate(mercato_http_request_duration_seconds_bucket"
            f'{{{{{ORDERS_POST}, le="{ORDER_LATENCY_BOUND}"}}}}[{{w}}]))'
        ),
        total=f"sum(rate(mercato_http_request_duration_seconds_count{{{{{ORDERS_POST}}}}}[{{w}}]))",
        summary=f"99 % of POST /api/v1/orders are answered within {ORDER_LATENCY_BOUND} s",
    ),
    Slo(
        name="order-time-to-terminal",
        alert="OrderTimeToTerminal",
        objective=0.99,
        bad=(
            "sum(rate(mercato_saga_time_to_terminal_seconds_count[{w}]))\n  -\n  "
            f'sum(rate(mercato_saga_time_to_terminal_seconds_bucket{{{{le="{TERMINAL_BOUND}"}}}}'
            "[{w}]))"
        ),
        total="sum(rate(mercato_saga_time_to_terminal_seconds_count[{w}]))",
        summary="99 % of orders are confirmed or cancelled within 5 s of being placed",
    ),
    Slo(
        name="saga-completion",
        alert="SagaCompletion",
        objective=0.995,
        # The saga's own answers (confirmed, out of stock, declined, cancelled by the
        # customer) are good; the deadline sweeper's and the breaker's are Mercato failing.
        bad=(
            "sum(rate(mercato_saga_outcomes_total"
            '{{reason=~"deadline_exceeded|payment_unavailable"}}[{w}]))'
        ),
        total="sum(rate(mercato_saga_outcomes_total[{w}]))",
        summary=(
            "99.5 % of finished orders are decided by the saga, not by its deadline "
            "or an unavailable payment provider"
        ),
    ),
)


def _recording(slo: Slo) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {"record": f"{RATIO}{window}", "expr": slo.ratio(window), "labels": {"slo": slo.name}}
        for window in WINDOWS
    ]
    rules.append(
        {"record": "slo:objective:ratio", "expr": str(slo.objective), "labels": {"slo": slo.name}}
    )
    return {"name": f"slo-{slo.name}-recording", "rules": rules}


def _burn_alert(slo: Slo, severity: str) -> dict[str, Any]:
    windows = [w for w in BURN_WINDOWS if w[0] == severity]
    clauses = [
        f'(\n  {RATIO}{long}{{slo="{slo.name}"}} > ({rate} * {slo.budget})\n'
        f'  and\n  {RATIO}{short}{{slo="{slo.name}"}} > ({rate} * {slo.budget})\n)'
        for _, long, short, rate, _ in windows
    ]
    speed = "Fast" if severity == "page" else "Slow"
    spent = " or ".join(
        f"{round(rate * int(long[:-1]) / (24 if long.endswith('h') else 1) / 30 * 100)} % "
        f"of the {SLO_PERIOD} budget in {long}"
        for _, long, _, rate, _ in windows
    )
    return {
        "alert": f"{slo.alert}BudgetBurn{speed}",
        "expr": "\nor\n".join(clauses) + "\n",
        "for": windows[0][4],
        "labels": {"severity": severity, "slo": slo.name},
        "annotations": {
            "summary": f"{slo.name}: error budget burning ({spent})",
            "description": (
                f"SLO: {slo.summary}, over {SLO_PERIOD}. Runbook: docs/operations.md#{slo.name}."
            ),
        },
    }


def _alert(
    name: str, expr: str, *, duration: str, severity: str, summary: str, anchor: str
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if duration != "0s":
        rule["for"] = duration
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": f"Runbook: docs/operations.md#{anchor}.",
    }
    return rule


# Annotations are plain text (the labels say which service, topic or instance), so that the
# rule tests can expect them verbatim.
# Counters whose children are made at their first increment appear at 1, which increase()
# cannot see; `unless ... offset` catches a series that is new in the window.
OTHER_ALERTS = (
    _alert(
        "SagaStalled",
        (
            f'sum(increase(mercato_http_requests_total{{{ORDERS_POST}, status="201"}}[15m])) > 0\n'
            "unless on ()\n"
            "(\n"
            "  sum(increase(mercato_saga_outcomes_total[15m])) > 0\n"
            "  or\n"
            "  count(mercato_saga_outcomes_total unless mercato_saga_outcomes_total offset 15m)\n"
            ")\n"
        ),
        duration="5m",
        severity="page",
        summary="Orders are placed but none has been confirmed or cancelled for 15 minutes",
        anchor="sagastalled",
    ),
    _alert(
        "DeadLetters",
        (
            "sum by (service, topic) (increase(mercato_dead_letters_total[15m])) > 0\n"
            "or\n"
            "sum by (service, topic) (\n"
            "  mercato_dead_letters_total unless mercato_dead_letters_total offset 15m\n"
            ")\n"
        ),
        duration="0s",
        severity="ticket",
        summary="Events were sent to a dead-letter topic",
        anchor="deadletters",
    ),
    _alert(
        "OutboxStuck",
        "max by (service) (mercato_outbox_oldest_age_seconds) > 30\n",
        duration="2m",
        severity="page",
        summary="A service's oldest unpublished outbox row is over 30 s old",
        anchor="outboxstuck",
    ),
    _alert(
        "ConsumerLagGrowing",
        (
            "sum by (service, topic) (mercato_consumer_lag) > 100\n"
            "and\n"
            "sum by (service, topic) (delta(mercato_consumer_lag[10m])) > 0\n"
        ),
        duration="10m",
        severity="ticket",
        summary="A consumer group falls further behind on a topic",
        anchor="consumerlaggrowing",
    ),
    _alert(
        "BreakerOpen",
        "max by (service, dependency) (mercato_breaker_state) == 2\n",
        duration="5m",
        severity="ticket",
        summary="A service's circuit breaker for a dependency is open",
        anchor="breakeropen",
    ),
    _alert(
        # The gateway's own `instance` label becomes `exported_instance` when the scrape
        # does not honour target labels; grouping by both keeps it either way.
        "GatewayUpstreamBreakerOpen",
        "max by (instance, exported_instance) (gateway_upstream_breaker_open) == 1\n",
        duration="5m",
        severity="ticket",
        summary="The gateway's breaker for an upstream instance is open or half-open",
        anchor="gatewayupstreambreakeropen",
    ),
    _alert(
        "RateLimitRedisFallback",
        (
            # "cached" is a refusal Redis gave, remembered: Redis still decides.
            "sum by (instance, source) (rate(gateway_ratelimit_decisions_total"
            '{source=~"local|none"}[5m])) > 0\n'
        ),
        duration="2m",
        severity="ticket",
        summary="The gateway decides rate limits without Redis",
        anchor="ratelimitredisfallback",
    ),
)


def groups() -> list[dict[str, Any]]:
    """Every rule group, recording groups first."""
    out = [_recording(slo) for slo in SLOS]
    out.append(
        {
            "name": "slo-burn-rate-alerts",
            "rules": [
                _burn_alert(slo, severity) for slo in SLOS for severity in ("page", "ticket")
            ],
        }
    )
    out.append({"name": "mercato-alerts", "rules": list(OTHER_ALERTS)})
    return out


def prometheus_rule() -> dict[str, Any]:
    """The groups as a prometheus-operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mercato"},
        "spec": {"groups": groups()},
    }


class _Dumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)

HEADER = {
    "rules": "# Generated by deploy/prometheus/slo_rules.py (make rules): edit that, not this.\n",
    "k8s": (
        "# Generated by deploy/prometheus/slo_rules.py (make rules) from the rules that\n"
        "# deploy/prometheus/rules.yml holds: edit the script, not this.\n"
    ),
}


def render(kind: str) -> str:
    """The text of one output: ``rules`` or ``k8s``."""
    document = {"groups": groups()} if kind == "rules" else prometheus_rule()
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER[kind] + body


def main(argv: list[str]) -> int:
    """Print the output that ``argv`` names."""
    if len(argv) != 1 or argv[0] not in HEADER:
        sys.stderr.write("usage: slo_rules.py {rules|k8s}\n")
        return 2
    sys.stdout.write(render(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
