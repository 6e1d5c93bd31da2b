"""The event catalogue in docs/ is current, and changes to events stay backward compatible."""

import copy
import json

from mercato_ops.events import run
from mercato_shared import catalogue
from tests.infra import REPO

PUBLISHED = REPO / "docs/events/catalogue.json"


def test_committed_catalogue_is_current_and_compatible():
    assert run("check", PUBLISHED) == 0, "run `make events`"
    published = json.loads(PUBLISHED.read_text())
    assert catalogue.incompatibilities(published, catalogue.build()) == []
    assert set(published["events"]) >= {"order.created/v1", "payment.failed/v1"}


def _with(change):
    current = copy.deepcopy(catalogue.build())
    change(current["events"]["order.created/v1"]["payload"])
    return current


def test_additive_changes_are_compatible():
    def add_optional(payload):
        payload["properties"]["gift_wrap"] = {"type": "boolean", "default": False}

    assert catalogue.incompatibilities(catalogue.build(), _with(add_optional)) == []


def test_breaking_changes_are_named():
    published = catalogue.build()

    def remove(payload):
        del payload["properties"]["customer_id"]

    def require(payload):
        payload["required"].append("email")

    def retype(payload):
        payload["properties"]["customer_id"] = {"type": "integer"}

    assert catalogue.incompatibilities(published, _with(remove)) == [
        "order.created/v1.customer_id: removed"
    ]
    assert catalogue.incompatibilities(published, _with(require)) == [
        "order.created/v1.email: became required"
    ]
    assert "type changed" in catalogue.incompatibilities(published, _with(retype))[0]
    gone = copy.deepcopy(published)
    del gone["events"]["payment.failed/v1"]
    assert catalogue.incompatibilities(published, gone) == [
        "payment.failed/v1: removed (keep publishing it or its consumers break)"
    ]


def test_write_refuses_a_breaking_change(tmp_path):
    path = tmp_path / "catalogue.json"
    broken = catalogue.build()
    broken["events"]["order.created/v1"]["payload"]["properties"]["legacy"] = {"type": "string"}
    path.write_text(json.dumps(broken))
    assert run("write", path) == 1
    assert json.loads(path.read_text()) == broken
    assert run("check", tmp_path / "missing.json") == 1
