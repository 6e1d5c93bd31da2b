"""The mail catcher: real SMTP deliveries, its HTTP view and its JSON-lines store."""

import asyncio
import signal
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from mercato_ops.mailcatcher import MailCatcher, MailCatcherSettings
from mercato_ops.mailcatcher_store import MailStore
from tests.apps import assert_problem
from tests.infra import eventually, free_port


def _settings(store: Path, **overrides) -> MailCatcherSettings:
    return MailCatcherSettings(**{"smtp_port": 0, "http_port": 0, "store": store, **overrides})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "mail" / "mail.jsonl"


@pytest.fixture
async def catcher(store):
    async with MailCatcher(_settings(store)) as catcher:
        yield catcher


@pytest.fixture
async def http(catcher):
    async with httpx.AsyncClient(base_url=catcher.http_url) as client:
        yield client


def message(
    *,
    to: str = "bob@example.test",
    subject: str = "Hello",
    message_id: str | None = "<m1@mercato.test>",
    body: str = "Hi Bob",
    sender: str = "orders@mercato.test",
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    if message_id is not None:
        mail["Message-ID"] = message_id
    mail.set_content(body)
    return mail


async def send(port: int, **fields) -> None:
    """Deliver a message built from ``fields`` over a connection of its own."""
    await aiosmtplib.send(
        message(**fields), hostname="127.0.0.1", port=port, local_hostname="test", start_tls=False
    )


async def test_delivered_mail_is_listed_newest_first(catcher, http):
    await send(catcher.smtp_port, to="bob@example.test", subject="First", message_id="<a@t>")
    await send(catcher.smtp_port, to="carol@example.test", subject="Prix: 5 €", message_id="<b@t>")

    listed = (await http.get("/api/messages")).json()
    assert [m["message_id"] for m in listed] == ["<b@t>", "<a@t>"]
    newest = listed[0]
    assert newest["from"] == "orders@mercato.test"
    assert newest["to"] == ["carol@example.test"]
    assert newest["subject"] == "Prix: 5 €"  # RFC 2047 decoded
    assert newest["deliveries"] == 1
    assert newest["received_at"] >= listed[1]["received_at"]

    raw = await http.get(f"/api/messages/{newest['n']}")
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert "Message-ID: <b@t>" in raw.text
    assert "Hi Bob" in raw.text
    assert newest["size"] == len(raw.content)


async def test_one_connection_carries_several_messages(catcher, http):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.smtp_port, start_tls=False)
    async with client:
        await client.send_message(message(message_id="<a@t>"))
        # A transaction given up half-way leaves nothing behind for the next one.
        await client.mail("orders@mercato.test")
        await client.rset()
        await client.send_message(message(message_id="<b@t>"))
        await client.send_message(message(message_id="<c@t>"))
        assert (catcher.connections, catcher.open_connections) == (1, 1)
    listed = (await http.get("/api/messages")).json()
    assert [m["message_id"] for m in listed] == ["<c@t>", "<b@t>", "<a@t>"]


async def test_stopping_closes_open_connections_with_a_421(store):
    catcher = MailCatcher(_settings(store))
    await catcher.start()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=catcher.smtp_port, start_tls=False)
    await client.connect()
    try:
        await client.send_message(message(message_id="<before@t>"))
        await asyncio.wait_for(catcher.stop(), timeout=10)

        async def hung_up():
            return not client.is_connected

        await eventually(hung_up, within=10)
        assert catcher.open_connections == 0
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.send_message(message(message_id="<after@t>"))
        assert [d.message_id for d in catcher.store.deliveries()] == ["<before@t>"]
    finally:
        client.close()


async def test_messages_can_be_filtered_by_recipient(catcher, http):
    await send(catcher.smtp_port, to="bob@example.test", message_id="<a@t>")
    await send(catcher.smtp_port, to="carol@example.test", message_id="<b@t>")
    bob = (await http.get("/api/messages", params={"to": "BOB@example.test"})).json()
    assert [m["message_id"] for m in bob] == ["<a@t>"]
    assert (await http.get("/api/messages", params={"to": "dave@example.test"})).json() == []


async def test_messages_survive_a_restart(store):
    async with MailCatcher(_settings(store)) as first:
        await send(first.smtp_port, subject="Before the restart", message_id="<keep@t>")
    async with (
        MailCatcher(_settings(store)) as second,
        httpx.AsyncClient(base_url=second.http_url) as http,
    ):
        listed = (await http.get("/api/messages")).json()
        assert [(m["message_id"], m["subject"]) for m in listed] == [
            ("<keep@t>", "Before the restart")
        ]
        raw = await http.get(f"/api/messages/{listed[0]['n']}")
        assert "Subject: Before the restart" in raw.text
        # Numbering goes on after what the file holds.
        await send(second.smtp_port, message_id="<next@t>")
        assert [m["n"] for m in (await http.get("/api/messages")).json()] == [2, 1]


async def test_a_line_cut_short_by_a_crash_does_not_hide_the_others(store):
    async with MailCatcher(_settings(store)) as catcher:
        await send(catcher.smtp_port, message_id="<whole@t>")
    with store.open("a") as file:
        file.write('{"n": 2, "message_id": "<cut@t>", "fr')
    async with MailCatcher(_settings(store)) as restarted:
        assert [d.message_id for d in restarted.store.deliveries()] == ["<whole@t>"]


async def test_a_repeated_message_id_counts_as_two_deliveries(catcher, http):
    await send(catcher.smtp_port, message_id="<same@t>")
    await send(catcher.smtp_port, message_id="<same@t>")
    await send(catcher.smtp_port, message_id="<other@t>")
    await send(catcher.smtp_port, message_id=None)

    listed = (await http.get("/api/messages")).json()
    assert len(listed) == 4
    by_id = {m["message_id"]: m["deliveries"] for m in listed}
    assert by_id == {"<same@t>": 2, "<other@t>": 1, None: 1}
    assert (await http.get("/api/message-ids")).json() == {"<same@t>": 2, "<other@t>": 1}


async def test_the_html_page_escapes_what_senders_wrote(catcher, http):
    await send(
        catcher.smtp_port,
        subject="<script>alert('x')</script> & more",
        message_id='<"><img src=x>@t>',
        to="bob@example.test",
    )
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text
    assert "<img" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page.text
    assert "&lt;&quot;&gt;&lt;img src=x&gt;@t&gt;" in page.text
    assert "bob@example.test" in page.text


async def test_delete_forgets_messages_in_memory_and_on_disk(store, catcher, http):
    await send(catcher.smtp_port)
    await send(catcher.smtp_port)
    assert (await http.delete("/api/messages")).json() == {"deleted": 2}
    assert (await http.get("/api/messages")).json() == []
    async with MailCatcher(_settings(store)) as restarted:
        assert restarted.store.deliveries() == []


async def test_bad_requests_are_problems_and_change_nothing(store, catcher, http):
    await send(catcher.smtp_port)
    before = store.read_bytes()
    assert_problem(await http.get("/api/messages/abc"), 422)
    assert_problem(await http.get("/api/messages/99"), 404)
    assert_problem(await http.get("/api/messages", params={"to": ""}), 422)
    assert_problem(await http.get("/api/messages", params={"to": "x" * 400}), 422)
    assert_problem(await http.post("/api/messages", json={}), 405)
    assert_problem(await http.delete("/api/messages/1"), 405)
    assert store.read_bytes() == before
    assert len((await http.get("/api/messages")).json()) == 1


async def test_a_taken_port_fails_the_start(store, catcher):
    taken = _settings(store, smtp_port=catcher.smtp_port)
    with pytest.raises(OSError, match="address already in use"):
        await MailCatcher(taken).start()
    # The HTTP socket bound before the failure was released: its port can be bound again.
    http_port = free_port()
    async with MailCatcher(_settings(store, http_port=http_port)):
        pass


async def test_the_console_script_serves_until_terminated(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    script = Path(sys.executable).parent / "mail-catcher"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "--smtp-port",
        str(smtp_port),
        "--http-port",
        str(http_port),
        "--store",
        str(tmp_path / "cli.jsonl"),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:

            async def listening():
                return (await http.get("/api/messages")).status_code == 200

            await eventually(listening, within=30)
            await send(smtp_port, message_id="<cli@t>")
            listed = (await http.get("/api/messages")).json()
            assert [m["message_id"] for m in listed] == ["<cli@t>"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_store_that_cannot_be_written_asks_the_sender_to_retry(store, catcher):
    store.mkdir(parents=True)  # appending to a directory fails
    with pytest.raises(aiosmtplib.SMTPDataError) as refusal:
        await send(catcher.smtp_port)
    assert refusal.value.code == 451
    assert catcher.store.deliveries() == []


def test_the_store_reads_encoded_subjects_and_folded_ids(tmp_path):
    store = MailStore(tmp_path / "mail.jsonl")
    raw = (
        b"From: shop@example.test\r\nTo: a@example.test\r\n"
        b"Subject: =?utf-8?q?Commande_confirm=C3=A9e?=\r\n"
        b"Message-ID:\r\n <order-1@example.test>\r\n\r\nbody\r\n"
    )
    delivery = store.add(sender="shop@example.test", recipients=["a@example.test"], raw=raw)
    assert (delivery.subject, delivery.message_id) == (
        "Commande confirmée",
        "<order-1@example.test>",
    )
    assert MailStore(tmp_path / "mail.jsonl").deliveries()[0].subject == "Commande confirmée"
