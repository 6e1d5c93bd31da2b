"""`mail-catcher`: the development SMTP server that keeps every mail it receives.

SMTP (aiosmtpd) and the HTTP view (FastAPI under uvicorn) share one event loop and one
store, so a message is listed as soon as the SMTP client has heard 250. Deliveries persist to
a JSON-lines file so that `mercato check` still sees them after the catcher restarts.

A client may keep its connection open and send any number of messages over it, as the
notification worker does; stopping the catcher closes such connections with a 421, so that
their clients reconnect to whatever listens next.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mercato_ops.mailcatcher_store import MailStore
from mercato_ops.mailcatcher_web import create_web_app
from mercato_shared.embedded import EmbeddedServer
from mercato_shared.logs import configure_logging
from mercato_shared.settings import DEV_STATE_DIR
from mercato_shared.worker import loop_factory

log = logging.getLogger(__name__)

SHUTDOWN_REPLY = b"421 4.3.2 Mail catcher shutting down, closing the connection\r\n"


class MailCatcherSettings(BaseSettings):
    """Every knob is a MAILCATCHER_* environment variable; port 0 picks a free port."""

    model_config = SettingsConfigDict(env_prefix="MAILCATCHER_", extra="ignore")

    # Loopback by default: the catcher has no authentication and shows every mail.
    host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=0, le=65535)
    http_port: int = Field(default=8025, ge=0, le=65535)
    store: Path = DEV_STATE_DIR / "mail.jsonl"
    log_level: str = "INFO"


class _StoreHandler:
    """aiosmtpd's handler: accept every recipient, store every message."""

    def __init__(self, store: MailStore) -> None:
        self._store = store

    # The name is aiosmtpd's hook name.
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            delivery = self._store.add(
                sender=envelope.mail_from or "", recipients=list(envelope.rcpt_tos), raw=raw
            )
        except OSError:
            # A full or unwritable disk is our problem, not the message's: a 4xx reply tells
            # the sender to try again later instead of giving the message up.
            log.exception("could not store a message")
            return "451 4.3.0 Could not store the message, try again later"
        log.info("message %d received (%d bytes)", delivery.n, delivery.size)
        return "250 Message accepted for delivery"


class _Connection(SMTP):
    """aiosmtpd's session for one client connection, registered with the catcher while open."""

    def __init__(
        self,
        handler: _StoreHandler,
        *,
        opened: set[_Connection],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # hostname given: aiosmtpd would otherwise look up the machine's FQDN.
        super().__init__(handler, hostname="mercato-mail-catcher", loop=loop)
        self._opened = opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._opened.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._opened.discard(self)
        super().connection_lost(error)

    def shut_down(self) -> None:
        """Tell the client the service is closing (RFC 5321 §3.8) and close the connection."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # The reply is flushed before the close, whatever the client was in the middle of.
            cast(asyncio.WriteTransport, transport).write(SHUTDOWN_REPLY)
            transport.close()


class MailCatcher:
    """SMTP server and HTTP view in the running event loop: ``async with MailCatcher(...)``."""

    def __init__(self, settings: MailCatcherSettings) -> None:
        self.settings = settings
        self.store = MailStore(settings.store)
        self._smtp: asyncio.Server | None = None
        self._http: EmbeddedServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_port: int | None = None
        self._open: set[_Connection] = set()
        self.connections = 0  # SMTP connections accepted since the catcher was built

    @property
    def smtp_port(self) -> int:
        """The bound SMTP port (the real one when the setting was 0)."""
        assert self._smtp is not None, "not started"  # noqa: S101 - programming error
        port: int = self._smtp.sockets[0].getsockname()[1]
        return port

    @property
    def open_connections(self) -> int:
        """SMTP connections open now."""
        return len(self._open)

    @property
    def http_port(self) -> int:
        assert self._http_port is not None, "not started"  # noqa: S101 - programming error
        return self._http_port

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.http_port}"

    async def start(self) -> None:
        """Bind both servers; returns once both accept connections (OSError if a port is taken)."""
        loop = asyncio.get_running_loop()
        # Bound here rather than by uvicorn, which answers a taken port with sys.exit().
        http_socket = socket.create_server((self.settings.host, self.settings.http_port))
        http_socket.setblocking(False)
        handler = _StoreHandler(self.store)

        def accept() -> _Connection:
            self.connections += 1
            return _Connection(handler, opened=self._open, loop=loop)

        try:
            self._smtp = await loop.create_server(
                accept,
                host=self.settings.host,
                port=self.settings.smtp_port,
            )
        except OSError:
            http_socket.close()
            raise
        config = uvicorn.Config(
            create_web_app(self.store), log_config=None, access_log=False, lifespan="off"
        )
        self._http = EmbeddedServer(config)
        self._http_port = http_socket.getsockname()[1]
        self._http_task = asyncio.create_task(
            self._http.serve(sockets=[http_socket]), name="mail-catcher-http"
        )
        log.info(
            "mail catcher: SMTP on %s:%d, web on %s, store %s",
            self.settings.host,
            self.smtp_port,
            self.http_url,
            self.settings.store,
        )

    async def stop(self) -> None:
        """Close both servers, and every SMTP connection still open."""
        if self._smtp is not None:
            self._smtp.close()
            # Closing the server only stops accepting: open connections would otherwise go
            # on delivering into this stopped catcher (and from Python 3.12 on, wait_closed()
            # waits for them).
            for connection in list(self._open):
                connection.shut_down()
            await self._smtp.wait_closed()
            self._smtp = None
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await asyncio.gather(self._http_task, return_exceptions=True)
        self._http = None
        self._http_task = None
        self._http_port = None

    async def __aenter__(self) -> MailCatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(settings: MailCatcherSettings) -> None:
    """Run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with MailCatcher(settings):
        await stop.wait()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mail-catcher", description=__doc__)
    parser.add_argument("--smtp-port", type=int, help="default MAILCATCHER_SMTP_PORT or 1025")
    parser.add_argument("--http-port", type=int, help="default MAILCATCHER_HTTP_PORT or 8025")
    parser.add_argument("--store", type=Path, help="JSON-lines file (MAILCATCHER_STORE)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mail-catcher`` console script."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        key: value
        for key, value in (
            ("smtp_port", args.smtp_port),
            ("http_port", args.http_port),
            ("store", args.store),
        )
        if value is not None
    }
    settings = MailCatcherSettings(**overrides)
    configure_logging("mail-catcher", settings.log_level)
    # aiosmtpd logs every command line of every session at info: five lines per mail, which
    # cost the catcher a fifth of its CPU under load. The catcher's own line per message
    # says what arrived; aiosmtpd's commands show again at debug.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(settings))
