"""The gateway's HTTP limits, against a real gateway process over raw sockets.

Each limit is tried just under (served) and just over (refused with a problem, counted, the
connection closed). Refusals must cost nothing behind the gateway: the upstream sees no
request, no rate-limit decision is taken, and a forged token is never looked at.
"""

import asyncio

import pytest

from tests.gateway.limits_support import SHORT_DEADLINES, HeadersUpstream, gateway_process
from tests.gateway.rawhttp import closed, exchange, metric, read_answer, refusals, request
from tests.gateway.support import EchoServer
from tests.infra import eventually

pytestmark = pytest.mark.e2e

KB = 1024
FORGED = ("Authorization", "Bearer not-a-token")
ECHO = "/api/v1/products/echo"
# The Host header that ``request`` sends counts towards the headers' size and number.
HOST_BYTES = len("Host") + len("gateway.test")


@pytest.fixture(scope="module")
async def echo():
    server = EchoServer("echo")
    # The upstream takes more than the gateway does, so "just under" reaches it.
    server.handler_args = {"max_line_size": 64 * KB, "max_field_size": 64 * KB, "max_headers": 500}
    async with server:
        yield server


@pytest.fixture(scope="module")
async def headers_upstream():
    async with HeadersUpstream() as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(stack, keys, dev_secret, echo, headers_upstream, tmp_path_factory):
    routes = {"/api/v1/products": echo.url, "/api/v1/notifications": headers_upstream.url}
    async with gateway_process(
        keys=keys,
        secret_file=dev_secret,
        logs=tmp_path_factory.mktemp("gateway"),
        routes=routes,
        **SHORT_DEADLINES,
    ) as port:
        yield port


def _padded(total: int, *, count: int = 4) -> list[tuple[str, str]]:
    """``count`` headers whose sizes, with the Host header's, add up to ``total`` bytes."""
    share, rest = divmod(total - HOST_BYTES, count)
    names = [f"x-pad-{i}" for i in range(count)]
    return [
        (name, "a" * (share - len(name) + (rest if i == count - 1 else 0)))
        for i, name in enumerate(names)
    ]


def _many(count: int) -> list[tuple[str, str]]:
    """Headers that, with the Host header, number ``count``."""
    return [(f"x-h{i}", "v") for i in range(count - 1)]


def _url(length: int) -> str:
    prefix = f"{ECHO}?pad="
    return prefix + "a" * (length - len(prefix))


UNDER = {
    "url": request(_url(8 * KB)),
    "one header": request(ECHO, [("x-pad", "a" * (8 * KB - len("x-pad")))]),
    "all headers": request(ECHO, _padded(32 * KB)),
    "header count": request(ECHO, _many(100)),
}
OVER = {
    "url": (request(_url(8 * KB + 1), [FORGED]), 414, "url_too_long"),
    "one header": (
        request(ECHO, [FORGED, ("x-pad", "a" * (8 * KB + 1 - len("x-pad")))]),
        431,
        "header_too_large",
    ),
    "all headers": (request(ECHO, [*_padded(32 * KB + 1), FORGED]), 431, "headers_too_large"),
    "header count": (request(ECHO, [FORGED, *_many(101)]), 431, "too_many_headers"),
    # One header far past every limit, sent as a client would in many reads.
    "8 MB header": (request(ECHO, [("x-big", "a" * 8 * KB * KB)]), 431, "headers_too_large"),
}
# Protocol violations that were refused before the limits existed, and must stay refused.
VIOLATIONS = {
    "content-length with transfer-encoding": (
        b"POST /api/v1/products/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "duplicate content-length": (
        b"POST /api/v1/products/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Content-Length: 4\r\n\r\nabcd"
    ),
    "obfuscated transfer-encoding": (
        b"POST /api/v1/products/echo HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "obsolete line folding": (
        b"GET /api/v1/products/echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"
    ),
    "unknown method": b"FROB /api/v1/products/echo HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", UNDER)
async def test_just_under_each_limit_is_served(gateway, echo, case):
    answer = await exchange(gateway, UNDER[case])
    assert answer.status == 200, answer


@pytest.mark.parametrize("case", OVER)
async def test_just_over_each_limit_is_refused_at_no_cost(gateway, echo, case):
    data, status, reason = OVER[case]
    before = await refusals(gateway)
    decisions = await metric(gateway, "gateway_ratelimit_decisions_total")
    seen = len(echo.requests)

    answer = await exchange(gateway, data)

    assert answer.status == status, answer
    assert answer.problem()["type"] == f"urn:mercato:problem:{reason.replace('_', '-')}"
    assert answer.closed
    after = await refusals(gateway)
    assert after[reason] == before.get(reason, 0) + 1
    # No upstream call, no rate-limit decision, and the forged token was not refused (401).
    assert len(echo.requests) == seen
    assert await metric(gateway, "gateway_ratelimit_decisions_total") == decisions


@pytest.mark.parametrize("case", VIOLATIONS)
async def test_protocol_violations_stay_400(gateway, echo, case):
    seen = len(echo.requests)
    answer = await exchange(gateway, VIOLATIONS[case])
    assert answer.status == 400, answer
    answer.problem()
    assert answer.closed
    assert len(echo.requests) == seen


async def test_headers_sent_in_time_in_pieces_are_served(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        data = request(ECHO)
        writer.write(data[:20])
        await asyncio.sleep(0.3)
        writer.write(data[20:])
        assert (await read_answer(reader)).status == 200
    finally:
        writer.close()


async def test_headers_that_never_finish_get_408_and_a_close(gateway):
    before = (await refusals(gateway)).get("header_timeout", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        writer.write(b"GET /api/v1/products/echo HTTP/1.1\r\nHost: x\r\n")
        answer = await read_answer(reader)
        assert answer.status == 408
        assert answer.problem()["type"] == "urn:mercato:problem:header-timeout"
        assert await closed(reader)
    finally:
        writer.close()
    assert (await refusals(gateway))["header_timeout"] == before + 1


async def test_a_connection_that_sends_nothing_is_closed(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        assert await closed(reader)
    finally:
        writer.close()


async def test_keep_alive_connections_are_reused_then_closed_when_idle(gateway):
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(2):
            writer.write(request(ECHO))
            assert (await read_answer(reader)).status == 200
        idle_since = loop.time()
        assert await closed(reader)
        # Closed by the keep-alive timeout (1 s here), not at once.
        assert loop.time() - idle_since >= 0.9
    finally:
        writer.close()


async def _send_slowly(writer: asyncio.StreamWriter, chunks: list[bytes], pause: float) -> None:
    """Write ``chunks`` ``pause`` seconds apart, stopping quietly once the server hangs up."""
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass


async def test_a_body_sent_steadily_is_served(gateway):
    body = b"x" * 200
    head = request(ECHO, method="POST", body=body)[: -len(body)]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        # 100 bytes/s for two seconds: above the minimum rate (50), never idle for 1 s.
        sender = asyncio.create_task(
            _send_slowly(writer, [head] + [body[i : i + 20] for i in range(0, 200, 20)], 0.2)
        )
        answer = await read_answer(reader)
        await sender
        assert answer.status == 200, answer
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("reason", "chunks", "pause"),
    [
        # A tenth of the body with the headers, then nothing.
        ("body_timeout", [], 0.1),
        # Then a byte every 0.2 s: 5 bytes/s, a tenth of the minimum, never idle for 1 s.
        ("body_too_slow", [b"x"] * 89, 0.2),
    ],
)
async def test_a_body_that_stalls_or_trickles_gets_408(gateway, reason, chunks, pause):
    before = (await refusals(gateway)).get(reason, 0)
    head = request(ECHO, method="POST", body=b"x" * 100)[:-90]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    try:
        writer.write(head)
        sender = asyncio.create_task(_send_slowly(writer, chunks, pause))
        answer = await read_answer(reader)
        assert answer.status == 408, answer
        assert answer.problem()["type"] == f"urn:mercato:problem:{reason.replace('_', '-')}"
        assert await closed(reader)
        sender.cancel()
    finally:
        writer.close()
    assert (await refusals(gateway))[reason] == before + 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/notifications/count/100", 200),
        ("/api/v1/notifications/count/101", 502),
        ("/api/v1/notifications/size/8192", 200),
        ("/api/v1/notifications/size/8193", 502),
    ],
)
async def test_upstream_answers_past_the_header_limits_are_502(gateway, path, status):
    before = (await refusals(gateway)).get("upstream_headers_too_large", 0)
    answer = await exchange(gateway, request(path))
    assert answer.status == status, answer
    after = (await refusals(gateway)).get("upstream_headers_too_large", 0)
    if status == 502:
        assert answer.problem()["type"] == "urn:mercato:problem:upstream-headers-too-large"
        assert after == before + 1
    else:
        assert answer.body == b"ok"
        assert after == before


async def _slow_client(port: int, first: bytes, then: list[bytes]) -> tuple[int, bool]:
    """Send ``first``, then ``then`` a piece every 0.3 s; the status and whether it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(first)
        sender = asyncio.create_task(_send_slowly(writer, then, 0.3))
        answer = await read_answer(reader, within=30)
        shut = await closed(reader, within=30)
        sender.cancel()
        return answer.status, shut
    finally:
        writer.close()


async def test_hundreds_of_slow_clients_are_cut_off_while_others_are_served(gateway):
    before = await refusals(gateway)
    slow_heads = [
        _slow_client(
            gateway, b"GET /api/v1/products/echo HTTP/1.1\r\nHost: x\r\n", [b"X-A: b\r\n"] * 100
        )
        for _ in range(250)
    ]
    stalled_bodies = [
        _slow_client(gateway, request(ECHO, method="POST", body=b"x" * 100)[:-90], [])
        for _ in range(250)
    ]
    slow = asyncio.gather(*slow_heads, *stalled_bodies)

    async def served() -> int:
        return (await exchange(gateway, request(ECHO))).status

    # Requests keep being served while the slow ones hold their connections.
    statuses = [await served() for _ in range(30)]
    assert statuses == [200] * 30
    assert await slow == [(408, True)] * 500
    after = await refusals(gateway)
    assert after["header_timeout"] - before.get("header_timeout", 0) >= 250
    bodies = ("body_timeout", "body_too_slow")
    assert sum(after.get(r, 0) - before.get(r, 0) for r in bodies) >= 250


@pytest.fixture
async def small_gateway(stack, keys, dev_secret, echo, tmp_path):
    async with gateway_process(
        keys=keys,
        secret_file=dev_secret,
        logs=tmp_path,
        routes={"/api/v1/products": echo.url},
        GATEWAY_MAX_CONNECTIONS="4",
        GATEWAY_KEEP_ALIVE_TIMEOUT_SECONDS="60",
    ) as port:
        yield port


async def test_connections_past_the_limit_get_503_and_a_close(small_gateway):
    port = small_gateway
    held = []
    try:
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            writer.write(request(ECHO))
            assert (await read_answer(reader)).status == 200

        answer = await exchange(port, request(ECHO))
        assert answer.status == 503
        assert answer.problem()["type"] == "urn:mercato:problem:too-many-connections"
        assert answer.headers["retry-after"] == "1"
        assert answer.closed

        held.pop().close()

        async def served() -> bool:
            return (await exchange(port, request(ECHO))).status == 200

        await eventually(served, within=10)
    finally:
        for writer in held:
            writer.close()

    async def counted() -> float:
        return (await refusals(port)).get("too_many_connections", 0)

    assert await eventually(counted, within=10) >= 1
