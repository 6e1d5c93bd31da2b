"""The gateway's cache of public answers, in front of a real upstream server and of the real
inventory service."""

import asyncio

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.ratelimit import RatePolicy
from gateway.settings import CacheConfig, HealthCheckConfig, RouteConfig
from inventory_service.app import create_app
from inventory_service.catalogue import demo_products
from inventory_service.settings import InventorySettings
from tests.apps import client_for
from tests.gateway.support import CatalogueServer, settings_for
from tests.infra import FakeClock, eventually, free_port
from tests.inventory_service.support import opened

PRODUCTS = "/api/v1/products"
MUG = f"{PRODUCTS}/MUG-BLUE"


@pytest.fixture
async def upstream():
    async with CatalogueServer() as server:
        yield server


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_gateway(keys, dev_secret, upstream, clock):
    def make(timeout_seconds=10.0, **cache):
        cache.setdefault("ttl_seconds", 10)
        settings = settings_for(
            keys=keys,
            secret_file=dev_secret,
            routes=[
                RouteConfig(
                    prefix=PRODUCTS,
                    upstreams=[upstream.url],
                    max_retries=0,
                    timeout_seconds=timeout_seconds,
                    health_check=HealthCheckConfig(interval_seconds=60),
                    cache=CacheConfig(**cache),
                )
            ],
            rate_limits=[
                RatePolicy(name="user", quota=100_000, window_seconds=60),
                RatePolicy(name="anonymous", quota=100_000, window_seconds=60),
            ],
        )
        gateway = Gateway(settings)
        gateway.caches[PRODUCTS].clock = clock
        return gateway

    return make


def counted(metrics: str, result: str, name: str = "gateway_cache_requests_total") -> float:
    """A cache metric's value for the products route (and ``result``, if it has one)."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("route") == PRODUCTS:
                if sample.labels.get("result", result) == result:
                    return sample.value
    raise AssertionError(f"no {name} for {result}")


async def test_a_fresh_entry_answers_until_its_ttl_then_the_upstream_again(
    make_gateway, upstream, clock, stack
):
    async with client_for(make_gateway()) as client:
        first = await client.get(MUG)
        assert first.status_code == 200
        assert "age" not in first.headers
        assert first.headers["x-request-id"]
        clock.now += 9.5
        again = await client.get(MUG)
        assert again.json() == first.json()
        assert again.headers["age"] == "9"
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["x-request-id"] != first.headers["x-request-id"]
        assert "ratelimit" in again.headers
        assert upstream.fetches == 1

        clock.now += 1
        assert (await client.get(MUG)).json()["fetch"] == 2
        assert (await client.get(f"{MUG}?x=1")).json()["fetch"] == 3  # the query is in the key
        head = await client.head(MUG)
        assert head.status_code == 200
        assert head.content == b""
        assert upstream.fetches == 3  # a HEAD is answered from the GET's entry


async def test_the_upstreams_max_age_shortens_the_ttl(make_gateway, upstream, clock, stack):
    upstream.headers = {"Cache-Control": "public, max-age=2"}
    async with client_for(make_gateway()) as client:
        await client.get(MUG)
        clock.now += 1.9
        assert (await client.get(MUG)).json()["fetch"] == 1
        clock.now += 0.2
        assert (await client.get(MUG)).json()["fetch"] == 2


async def test_if_none_match_is_answered_from_the_cache_with_a_304(make_gateway, upstream, stack):
    async with client_for(make_gateway()) as client:
        # A miss: the upstream gets no conditional (the cache needs the body), the client
        # still gets its 304.
        etag = (await client.get(MUG)).headers["etag"]
        cold = await client.get(f"{MUG}?cold", headers={"If-None-Match": "*"})
        assert cold.status_code == 304
        assert upstream.fetches == 2

        for held in [etag, f"W/{etag}", f'"old", {etag}']:
            hit = await client.get(MUG, headers={"If-None-Match": held})
            assert hit.status_code == 304
            assert hit.content == b""
            assert hit.headers["etag"] == etag
            assert hit.headers["cache-control"] == "public, max-age=60"
            assert "content-type" not in hit.headers
        changed = await client.get(MUG, headers={"If-None-Match": '"old"'})
        assert changed.status_code == 200
        assert changed.json()["conditional"] is None
        assert upstream.fetches == 2


async def test_a_stale_entry_answers_while_the_upstream_is_down(
    make_gateway, upstream, clock, stack
):
    async with client_for(make_gateway(stale_if_error_seconds=30)) as client:
        fetched = (await client.get(MUG)).json()
        clock.now += 15
        await upstream.__aexit__(None, None, None)  # the upstream server stops
        stale = await client.get(MUG)
        assert stale.status_code == 200
        assert stale.json() == fetched
        assert stale.headers["age"] == "15"
        assert (await client.get(MUG, headers={"If-None-Match": "*"})).status_code == 304

        assert (await client.get(f"{MUG}?other")).status_code == 502  # nothing stored
        clock.now += 26  # past ttl + stale-if-error
        assert (await client.get(MUG)).status_code == 502
        metrics = (await client.get("/metrics")).text
    assert counted(metrics, "stale") == 2
    assert counted(metrics, "miss") == 3


async def test_a_5xx_is_answered_from_the_stale_entry_within_the_upstreams_window(
    make_gateway, upstream, clock, stack
):
    upstream.headers = {"Cache-Control": "public, max-age=1, stale-if-error=5"}
    async with client_for(make_gateway(stale_if_error_seconds=60)) as client:
        await client.get(MUG)
        upstream.status = 503
        clock.now += 5.9
        assert (await client.get(MUG)).status_code == 200
        clock.now += 0.2  # the upstream's stale-if-error is shorter than the route's
        assert (await client.get(MUG)).status_code == 503


@pytest.mark.parametrize("failure", ["timeout", "no healthy instance", "bulkhead full"])
async def test_a_stale_entry_answers_whichever_way_the_upstream_fails(
    make_gateway, upstream, clock, failure, stack
):
    gateway = make_gateway(timeout_seconds=0.2)
    async with client_for(gateway) as client:
        await client.get(MUG)
        clock.now += 11
        route = next(iter(gateway.upstreams))
        if failure == "timeout":
            upstream.delay = 1
        elif failure == "no healthy instance":
            route.instances[0].healthy = False
        else:
            route.bulkhead.max_concurrent = 0
        stale = await client.get(MUG)
        assert stale.status_code == 200
        assert stale.json()["fetch"] == 1
        assert stale.headers["age"] == "11"


@pytest.mark.parametrize("credentials", [{"Cookie": "session=1"}, "bearer"])
async def test_requests_with_credentials_neither_read_nor_fill_the_cache(
    make_gateway, upstream, dev_token, credentials, stack
):
    if credentials == "bearer":
        credentials = {"Authorization": f"Bearer {dev_token('alice')}"}
    async with client_for(make_gateway()) as client:
        await client.get(MUG)
        for _ in range(2):
            personal = await client.get(MUG, headers=credentials)
            assert personal.status_code == 200
            assert "age" not in personal.headers
        assert upstream.fetches == 3
        await client.get(f"{MUG}?theirs", headers=credentials)
        assert (await client.get(f"{MUG}?theirs")).json()["fetch"] == 5
        metrics = (await client.get("/metrics")).text
    assert counted(metrics, "bypass") == 3


async def test_answers_are_keyed_by_the_headers_they_vary_on(make_gateway, upstream, stack):
    upstream.headers = {"Cache-Control": "public, max-age=60", "Vary": "Accept-Language"}
    async with client_for(make_gateway()) as client:
        english = {"Accept-Language": "en"}
        german = {"Accept-Language": "de"}
        assert (await client.get(MUG, headers=english)).json()["language"] == "en"
        assert (await client.get(MUG, headers=german)).json()["language"] == "de"
        assert (await client.get(MUG, headers=english)).json()["fetch"] == 1
        assert (await client.get(MUG, headers=german)).json()["fetch"] == 2
        assert (await client.get(MUG)).json()["language"] is None
        assert upstream.fetches == 3


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "no-store"},
        {"Cache-Control": "private, max-age=60"},
        {"Cache-Control": "no-cache"},
        {"Cache-Control": "max-age=0"},
        {"Cache-Control": "public, max-age=60", "Set-Cookie": "session=1"},
        {"Cache-Control": "public, max-age=60", "Vary": "*"},
    ],
)
async def test_answers_the_upstream_forbids_storing_are_not_stored(
    make_gateway, upstream, headers, stack
):
    upstream.headers = headers
    async with client_for(make_gateway()) as client:
        for fetch in (1, 2):
            answer = await client.get(MUG)
            assert answer.json()["fetch"] == fetch
        assert upstream.fetches == 2


async def test_errors_and_large_bodies_pass_through_unstored(make_gateway, upstream, stack):
    async with client_for(make_gateway(max_body_bytes=1000)) as client:
        upstream.status = 404
        assert (await client.get(MUG)).status_code == 404
        upstream.status, upstream.body_bytes = 200, 2000
        for fetch in (2, 3):
            large = await client.get(MUG)
            assert large.json()["fetch"] == fetch
            assert len(large.content) > 2000
        head = await client.head(f"{MUG}?large")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 2000
        upstream.body_bytes = 0
        assert (await client.get(MUG)).json()["fetch"] == 5
        assert (await client.get(MUG)).json()["fetch"] == 5


async def test_the_least_recently_used_entry_goes_first(make_gateway, upstream, stack):
    gateway = make_gateway(max_entries=2)
    async with client_for(gateway) as client:
        for path in ["/a", "/b", "/a", "/c"]:  # /b is the least recently used when /c comes
            await client.get(PRODUCTS + path)
        assert upstream.fetches == 3
        assert len(gateway.caches[PRODUCTS]) == 2
        assert (await client.get(f"{PRODUCTS}/a")).json()["fetch"] == 1
        assert (await client.get(f"{PRODUCTS}/c")).json()["fetch"] == 3
        assert (await client.get(f"{PRODUCTS}/b")).json()["fetch"] == 4
        metrics = (await client.get("/metrics")).text
    assert counted(metrics, "", name="gateway_cache_entries") == 2
    assert counted(metrics, "hit") == 3
    assert counted(metrics, "miss") == 4


async def test_concurrent_misses_share_one_fetch(make_gateway, upstream, stack):
    async with client_for(make_gateway()) as client:
        answers = await asyncio.gather(*(client.get(MUG) for _ in range(5)))
        assert {a.json()["fetch"] for a in answers} == {1}
        assert upstream.fetches == 1


async def test_writes_are_not_cached(make_gateway, upstream, dev_token, stack):
    admin = {"Authorization": f"Bearer {dev_token('root', 'admin')}"}
    async with client_for(make_gateway()) as client:
        for fetch in (1, 2):
            put = await client.put(f"{MUG}/stock", json={"on_hand": 1}, headers=admin)
            assert put.json()["fetch"] == fetch


@pytest.fixture
async def inventory_api(inventory_db, keys):
    """The real inventory api under uvicorn on a free port, its demo catalogue seeded."""
    settings = InventorySettings(database_url=inventory_db, identity_public_keys=keys[1])
    async with opened(settings) as inventory:
        await inventory.seed(demo_products())
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    serving = asyncio.create_task(server.serve())

    async def started():
        return server.started

    await eventually(started, within=10, interval=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def test_the_catalogue_through_the_gateway_is_cached_and_revalidated(
    keys, dev_secret, dev_token, inventory_api, stack
):
    settings = settings_for(
        keys=keys,
        secret_file=dev_secret,
        routes=[RouteConfig(prefix=PRODUCTS, upstreams=[inventory_api], cache=CacheConfig())],
    )
    async with client_for(Gateway(settings)) as client:
        first = await client.get(MUG)
        assert first.status_code == 200
        assert first.json()["sku"] == "MUG-BLUE"
        assert first.headers["cache-control"] == "public, max-age=5, stale-if-error=60"
        etag = first.headers["etag"]
        cached = await client.get(MUG, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert "age" in cached.headers  # answered by the gateway's cache
        assert cached.headers["etag"] == etag
        # With credentials the request reaches the service, which answers the 304 itself.
        bearer = {"Authorization": f"Bearer {dev_token('alice')}"}
        direct = await client.get(MUG, headers=bearer | {"If-None-Match": etag})
        assert direct.status_code == 304
        assert "age" not in direct.headers
        assert direct.headers["etag"] == etag
