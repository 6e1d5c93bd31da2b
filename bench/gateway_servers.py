"""Processes a benchmark starts on loopback: nginx in its roles, their cleanup, their CPU.

Every process is started in a session of its own and stopped (then killed) when the
`Processes` context ends, on failure too, so a broken run leaves no listener behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bench.common import tool

_TICKS = os.sysconf("SC_CLK_TCK")


def session_seconds(leader: int) -> float:
    """User plus system CPU seconds of every live process in ``leader``'s session.

    On a shared machine requests per second are noisy; CPU seconds per request move much
    less, because they do not count the time a process waited for a core.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may contain spaces and parentheses; fields follow the last ')'.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # session id
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, *, within: float = 30.0) -> None:
    """Poll ``url`` until it answers 200, or raise with the last error."""
    deadline = time.monotonic() + within
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {within} s (last error: {last!r})")


class Processes:
    """The processes of one benchmark run, stopped in reverse order on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with its output in ``<logs>/<name>.log`` (``env``: all of it)."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
        self._started.append((name, process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """Stop one process (and its children, which share its session) before the others."""
        for entry in list(self._started):
            if entry[1] is process:
                self._stop(*entry)
                self._started.remove(entry)

    def check_alive(self) -> None:
        """Fail early, with the log's tail, when a process has died."""
        for name, process, _ in self._started:
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        while self._started:
            self._stop(*self._started.pop())

    @staticmethod
    def _stop(name: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        # The whole session: nginx's workers and uvicorn's worker processes go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


_NGINX_COMMON = """\
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # wrk and k6 keep their connections for the whole run; the default 1000 would make
    # every 1000th request pay for a new connection.
    keepalive_requests 10000000;
    keepalive_timeout 60s;
{body}
}}
"""

_UPSTREAM_BODY = """\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        default_type application/json;
        location = /healthz {{ return 200 "ok"; }}
        location = /jwks.json {{ root {dir}; }}
        # An OTLP/HTTP sink: spans are accepted and dropped, so tracing costs the gateway
        # what exporting costs it, not what storing costs a collector.
        location = /v1/traces {{ return 200 ""; }}
        location / {{ root {dir}; try_files /item.json =404; }}
    }}
"""

_PROXY_BODY = """\
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    # The reference for the gateway's cache under /catalogue/: nginx's own, its keys in
    # shared memory, its bodies in files (which the page cache keeps in memory).
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=catalogue:10m max_size=64m
                     inactive={cache_seconds}s use_temp_path=off;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location /catalogue/ {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header Authorization "";
            # What the gateway's cache does: a TTL when the upstream sets none, one fetch
            # per key at a time, stale entries while the upstream fails, HEAD from GET.
            proxy_cache catalogue;
            proxy_cache_valid 200 {cache_seconds}s;
            proxy_cache_lock on;
            proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504;
            proxy_cache_bypass $http_authorization $http_cookie;
            proxy_no_cache $http_authorization $http_cookie;
        }}
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What the gateway adds too, so both proxies rewrite a comparable set of headers.
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;
            proxy_set_header Authorization "";
        }}
    }}
"""


def _nginx(
    processes: Processes, name: str, directory: Path, workers: int, body: str
) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    # nginx's workers run as nobody: they must be able to read the files served.
    directory.chmod(0o755)
    config = directory / "nginx.conf"
    config.write_text(_NGINX_COMMON.format(workers=workers, dir=directory, body=body))
    return processes.start(name, [tool("nginx"), "-c", str(config), "-p", str(directory)])


def start_upstream(
    processes: Processes, directory: Path, port: int, *, body: bytes, jwks: bytes
) -> subprocess.Popen[bytes]:
    """nginx serving ``body`` as JSON on every path (the upstream of all configurations)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "item.json").write_bytes(body)
    (directory / "jwks.json").write_bytes(jwks)
    return _nginx(
        processes, "upstream", directory, 1, _UPSTREAM_BODY.format(port=port, dir=directory)
    )


def start_nginx_proxy(
    processes: Processes,
    directory: Path,
    port: int,
    *,
    upstream_port: int,
    workers: int,
    cache_seconds: int,
) -> subprocess.Popen[bytes]:
    """nginx as a reverse proxy with a keep-alive pool to the upstream (cached under
    /catalogue/ for ``cache_seconds``)."""
    body = _PROXY_BODY.format(
        port=port, upstream_port=upstream_port, dir=directory, cache_seconds=cache_seconds
    )
    return _nginx(processes, "nginx-proxy", directory, workers, body)
