"""The `mercato` commands say clearly when there is no running Mercato."""

from mercato_ops.cli import main
from tests.infra import free_port


def test_check_and_demo_without_a_running_stack(monkeypatch, capsys, dev_secret):
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("MERCATO_GATEWAY_URL", f"http://{dead}")
    monkeypatch.setenv("MERCATO_SANDBOX_URL", f"http://{dead}")
    monkeypatch.setenv("MERCATO_MAILCATCHER_URL", f"http://{dead}")
    for service in ("ORDER", "INVENTORY", "PAYMENT", "NOTIFICATION"):
        monkeypatch.setenv(
            f"MERCATO_{service}_DATABASE_URL", f"postgresql+asyncpg://x:y@{dead}/none"
        )
    assert main(["check"]) == 2
    assert "make up" in capsys.readouterr().err
    assert main(["demo", "5", "--secret-file", str(dev_secret)]) == 1
    assert "make up" in capsys.readouterr().err
    assert main(["demo", "0"]) == 2
