import json
import logging
import time

from mercato_shared.logs import JsonFormatter, LineLogger, redact


def test_redact_masks_bearer_tokens_jwts_and_emails():
    text = (
        "Authorization: Bearer abc.def-ghi and token eyJhbGciOi.eyJzdWIiOi.sig_part "
        "for alice.smith+shop@example.co.uk"
    )
    out = redact(text)
    assert "abc.def-ghi" not in out
    assert "eyJhbGciOi" not in out
    assert "alice.smith" not in out
    assert out.count("[token]") == 2
    assert "[email]" in out


def test_formatter_writes_one_json_object_with_extras_redacted():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "mail to %s", ("a@b.io",), None)
    record.order_id = "o-1"
    record.recipient = "bob@example.com"
    line = JsonFormatter("order-api").format(record)
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["service"] == "order-api"
    assert entry["msg"] == "mail to [email]"
    assert entry["order_id"] == "o-1"
    assert entry["recipient"] == "[email]"


def test_formatter_writes_what_its_fast_encoder_refuses():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "big", (), None)
    record.count = 2**70
    record.ids = {1: "a"}
    record.when = object()
    entry = json.loads(JsonFormatter("order-api").format(record))
    assert entry["count"] == 2**70
    assert entry["ids"] == {"1": "a"}
    assert entry["when"].startswith("<object object")


def test_formatter_includes_redacted_exception():
    try:
        raise ValueError("bad token Bearer s3cr3t")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    entry = json.loads(JsonFormatter("svc").format(record))
    assert "ValueError" in entry["exc"]
    assert "s3cr3t" not in entry["exc"]


def test_redact_ignores_case_and_handles_non_ascii_text():
    out = redact("BEARER abc.def EYJhbGci.EYJzdWIi.sig für jörg@example.de")
    assert out == "[token] [token] für [email]"
    assert redact("GET /api/v1/orders 200") == "GET /api/v1/orders 200"


def test_formatter_timestamp_is_utc_iso_with_milliseconds():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", (), None)
    record.created = 1_700_000_000.1239
    entry = json.loads(JsonFormatter("svc").format(record))
    assert entry["ts"] == "2023-11-14T22:13:20.123+00:00"
    assert entry["level"] == "info"
    assert "trace_id" not in entry


def test_line_logger_goes_through_level_and_handlers_with_redacted_fields(caplog):
    lines = LineLogger("x.access")
    caplog.set_level("WARNING", logger="x.access")
    lines.info("dropped", {})
    assert not caplog.records
    caplog.set_level("INFO", logger="x.access")
    lines.info("GET /a 200", {"status": 200, "path": "/a?to=bob@example.com"})
    [record] = caplog.records
    entry = json.loads(JsonFormatter("gateway").format(record))
    assert entry["msg"] == "GET /a 200"
    assert entry["logger"] == "x.access"
    assert entry["level"] == "info"
    assert entry["status"] == 200
    assert entry["path"] == "/a?to=[email]"
    assert abs(record.created - time.time()) < 60
