import json
import logging

from mercato_shared.logs import JsonFormatter, redact


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


def test_formatter_includes_redacted_exception():
    try:
        raise ValueError("bad token Bearer s3cr3t")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    entry = json.loads(JsonFormatter("svc").format(record))
    assert "ValueError" in entry["exc"]
    assert "s3cr3t" not in entry["exc"]
