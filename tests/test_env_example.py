"""`.env.example` documents exactly the variables the settings classes read."""

import importlib.util
import io
from contextlib import redirect_stdout

from tests.infra import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("env_example", REPO / "deploy/env_example.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_env_example_is_current():
    generator = _generator()
    expected = io.StringIO()
    with redirect_stdout(expected):
        generator.main()
    assert (REPO / ".env.example").read_text() == expected.getvalue(), "run `make env-example`"
    documented = {
        line.split("=", 1)[0]
        for line in expected.getvalue().splitlines()
        if line and not line.startswith("#")
    }
    assert "PAYMENT_SANDBOX_URL" in documented
    assert "MERCATO_GATEWAY_URL" in documented
    assert len(documented) == sum(len(cls.model_fields) for cls in generator.SETTINGS)
