"""JWT authentication and authorization at the gateway: the attack suite, each case a 401 or
403 with no upstream call."""

import base64
import hashlib
import hmac
import json
import time

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.app import create_app
from gateway.auth import AuthenticationError, Authenticator, authenticator
from gateway.ratelimit import RatePolicy
from gateway.settings import IssuerConfig, RouteConfig
from tests.apps import assert_problem, client_for
from tests.gateway.support import (
    AUDIENCE,
    ISSUER,
    EchoServer,
    JwksServer,
    claims,
    settings_for,
)
from tests.infra import FakeClock

ORDERS = "/api/v1/orders"


@pytest.fixture
async def servers():
    async with EchoServer("orders") as upstream, JwksServer() as jwks:
        yield upstream, jwks


@pytest.fixture
async def client(servers, keys, dev_secret, stack):
    upstream, jwks = servers
    settings = settings_for(
        keys=keys,
        secret_file=dev_secret,
        jwks_url=jwks.url,
        routes=[
            RouteConfig(prefix=ORDERS, upstreams=[upstream.url]),
            RouteConfig(prefix="/api/v1/products", upstreams=[upstream.url]),
        ],
    )
    async with client_for(create_app(settings)) as client:
        yield client


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: dict, payload: dict, signature: bytes = b"") -> str:
    parts = (json.dumps(header).encode(), json.dumps(payload).encode(), signature)
    return ".".join(_b64(part) for part in parts)


def _rs256(jwks, payload, kid="rsa-1"):
    return jwt.encode(payload, jwks.rsa, algorithm="RS256", headers={"kid": kid})


def _attacks(jwks):
    public_pem = jwks.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}".encode()
    )
    confused = (
        signing_input.decode()
        + "."
        + _b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    )
    valid = _rs256(jwks, claims())
    head, _, signature = valid.split(".")
    tampered_body = _b64(json.dumps(claims(sub="admin", roles=["admin"])).encode())
    return {
        "malformed": "not.a.jwt",
        "garbage": "abc",
        "alg-none": _hand_made({"alg": "none", "typ": "JWT"}, claims()),
        "hs256-with-rsa-public-key": confused,
        "expired": _rs256(jwks, claims(exp=1_000_000, iat=999_000, nbf=999_000)),
        "not-yet-valid": _rs256(jwks, claims(nbf=4_000_000_000)),
        "wrong-issuer": _rs256(jwks, claims(iss="https://evil.test")),
        "wrong-audience": _rs256(jwks, claims(aud="someone-else")),
        "no-audience": _rs256(jwks, {k: v for k, v in claims().items() if k != "aud"}),
        "no-subject": _rs256(jwks, {k: v for k, v in claims().items() if k != "sub"}),
        "bad-signature": f"{head}.{tampered_body}.{signature}",
        "unknown-kid": _rs256(jwks, claims(), kid="rotated-away"),
        "es256-token-with-rsa-kid": jwt.encode(
            claims(), jwks.ec, algorithm="ES256", headers={"kid": "rsa-1"}
        ),
    }


ATTACKS = [
    "malformed",
    "garbage",
    "alg-none",
    "hs256-with-rsa-public-key",
    "expired",
    "not-yet-valid",
    "wrong-issuer",
    "wrong-audience",
    "no-audience",
    "no-subject",
    "bad-signature",
    "unknown-kid",
    "es256-token-with-rsa-kid",
]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_or_invalid_tokens_are_refused_without_upstream_call(client, servers, attack):
    upstream, jwks = servers
    token = _attacks(jwks)[attack]
    response = await client.get(ORDERS, headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    # Even a public route refuses a bad token rather than treating the caller as anonymous.
    assert_problem(
        await client.get("/api/v1/products", headers={"Authorization": f"Bearer {token}"}), 401
    )
    assert upstream.requests == []


async def test_no_token_wrong_scheme_and_token_in_query_are_refused(client, servers, dev_token):
    upstream, _ = servers
    assert_problem(await client.get(ORDERS), 401)
    assert_problem(await client.get(ORDERS, headers={"Authorization": "Basic YTpi"}), 401)
    assert_problem(await client.get(ORDERS, headers={"Authorization": "Bearer "}), 401)
    assert_problem(await client.get(f"{ORDERS}?access_token={dev_token()}"), 401)
    assert upstream.requests == []


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_valid_jwks_tokens_pass_and_keys_are_cached(client, servers, algorithm):
    upstream, jwks = servers
    key, kid = (jwks.rsa, "rsa-1") if algorithm == "RS256" else (jwks.ec, "ec-1")
    token = jwt.encode(claims(), key, algorithm=algorithm, headers={"kid": kid})
    for _ in range(5):
        response = await client.get(ORDERS, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
    assert len(upstream.requests) == 5
    assert jwks.hits == 1


async def test_unknown_kid_refetches_once_then_is_rate_limited(client, servers):
    _, jwks = servers
    good = _rs256(jwks, claims())
    assert (
        await client.get(ORDERS, headers={"Authorization": f"Bearer {good}"})
    ).status_code == 200
    assert jwks.hits == 1
    for kid in ("new-1", "new-2", "new-3"):
        forged = _rs256(jwks, claims(), kid=kid)
        assert_problem(await client.get(ORDERS, headers={"Authorization": f"Bearer {forged}"}), 401)
    # Within the minimum refetch interval the issuer is asked once at most.
    assert jwks.hits <= 2


async def test_roles_decide_admin_routes(client, servers, dev_token):
    upstream, _ = servers
    stock = "/api/v1/products/MUG-BLUE/stock"
    customer = {"Authorization": f"Bearer {dev_token('alice')}"}
    admin = {"Authorization": f"Bearer {dev_token('root', 'admin')}"}
    assert_problem(await client.put(stock, json={"on_hand": 5}, headers=customer), 403)
    assert_problem(await client.put(stock, json={"on_hand": 5}), 401)
    assert upstream.requests == []
    assert (await client.put(stock, json={"on_hand": 5}, headers=admin)).status_code == 200
    assert (await client.get("/api/v1/products/MUG-BLUE")).status_code == 200


async def test_dev_token_from_the_cli_is_accepted(client, dev_secret, capsys):
    from mercato_ops.cli import main

    assert (
        main(["token", "--sub", "carol", "--roles", "customer", "--secret-file", str(dev_secret)])
        == 0
    )
    token = capsys.readouterr().out.strip()
    response = await client.get(ORDERS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert main(["token", "--roles", "root"]) == 2


def _verified_cache_authenticator(clock, seconds):
    secret = "s" * 32
    config = IssuerConfig(
        issuer=ISSUER,
        audiences=[AUDIENCE],
        algorithms=["HS256"],
        hs256_secret=secret,
        verified_cache_seconds=seconds,
    )
    authenticator = Authenticator([config], lambda: None, clock=clock)  # type: ignore[arg-type,return-value]
    return authenticator, secret


async def test_verified_cache_is_bounded_by_its_ttl_and_the_token_exp(monkeypatch):
    clock = FakeClock(time.time())
    authenticator, secret = _verified_cache_authenticator(clock, 30)
    verified = 0
    original = authenticator._verify

    async def counting(token):
        nonlocal verified
        verified += 1
        return await original(token)

    monkeypatch.setattr(authenticator, "_verify", counting)
    long_lived = jwt.encode(claims(sub="bob"), secret, algorithm="HS256")
    assert (await authenticator.authenticate(long_lived)).subject == "bob"
    assert (await authenticator.authenticate(long_lived)).subject == "bob"
    assert verified == 1
    clock.now += 31  # past the TTL: verified again
    await authenticator.authenticate(long_lived)
    assert verified == 2
    # exp comes before the TTL: the entry ends with the token.
    short = jwt.encode(claims(sub="eve", exp=int(clock.now) + 5), secret, algorithm="HS256")
    await authenticator.authenticate(short)
    clock.now += 6
    await authenticator.authenticate(short)
    assert verified == 4


@pytest.mark.parametrize("subject", ["a\x00b", "x" * 256, "", 7])
async def test_a_subject_no_service_could_store_is_refused(subject):
    authenticator, secret = _verified_cache_authenticator(FakeClock(time.time()), 0)
    with pytest.raises(AuthenticationError, match=r"(?i)sub"):
        await authenticator.authenticate(jwt.encode(claims(sub=subject), secret, algorithm="HS256"))


async def test_verified_cache_off_verifies_every_time():
    authenticator, secret = _verified_cache_authenticator(FakeClock(time.time()), 0)
    token = jwt.encode(claims(), secret, algorithm="HS256")
    await authenticator.authenticate(token)
    assert not authenticator._verified
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate(token[:-2] + "xx")


def _counting(monkeypatch, authenticator):
    calls = []
    original = authenticator._verify

    async def counting(token):
        calls.append(token)
        return await original(token)

    monkeypatch.setattr(authenticator, "_verify", counting)
    return calls


async def test_verified_cache_is_on_by_default_and_evicts_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(authenticator, "VERIFIED_CACHE_ENTRIES", 2)
    secret = "s" * 32
    config = IssuerConfig(
        issuer=ISSUER, audiences=[AUDIENCE], algorithms=["HS256"], hs256_secret=secret
    )
    assert config.verified_cache_seconds > 0
    auth = Authenticator([config], lambda: None)  # type: ignore[arg-type,return-value]
    verified = _counting(monkeypatch, auth)
    a, b, c = (jwt.encode(claims(sub=name), secret, algorithm="HS256") for name in "abc")
    for token in (a, b, a, c, a, b):
        await auth.authenticate(token)
    # a was used after b, so c's arrival evicted b, which is verified again at the end.
    assert verified == [a, b, c, b]


async def test_every_hit_checks_the_token_times_again(monkeypatch):
    clock = FakeClock(time.time())
    auth, secret = _verified_cache_authenticator(clock, 30)
    verified = _counting(monkeypatch, auth)
    token = jwt.encode(claims(nbf=int(clock.now)), secret, algorithm="HS256")
    await auth.authenticate(token)
    await auth.authenticate(token)
    assert len(verified) == 1
    clock.now -= 60  # a clock stepped back before the token's nbf (less the leeway)
    await auth.authenticate(token)
    assert len(verified) == 2


async def test_a_key_withdrawn_from_the_jwks_is_not_honoured_from_the_cache(servers):
    _, jwks = servers
    config = IssuerConfig(
        issuer=ISSUER, audiences=[AUDIENCE], algorithms=["RS256"], jwks_url=jwks.url
    )
    async with aiohttp.ClientSession() as session:
        auth = Authenticator([config], lambda: session)
        token = _rs256(jwks, claims())
        assert (await auth.authenticate(token)).subject == "alice"
        assert (await auth.authenticate(token)).subject == "alice"
        assert (jwks.hits, len(auth._verified)) == (1, 1)
        # The issuer rotates the key out; the gateway's next fetch of the key set sees it.
        jwks.document = lambda: {"keys": []}
        key_set = auth._issuers[ISSUER].jwks
        assert key_set is not None
        await key_set._refresh()
        with pytest.raises(AuthenticationError, match="unknown key id"):
            await auth.authenticate(token)


async def test_a_flood_of_bad_tokens_is_limited_by_client_ip(
    servers, keys, dev_secret, dev_token, stack
):
    upstream, _ = servers
    settings = settings_for(
        keys=keys,
        secret_file=dev_secret,
        routes=[RouteConfig(prefix=ORDERS, upstreams=[upstream.url])],
        rate_limits=[
            RatePolicy(name="user", quota=100, window_seconds=60),
            RatePolicy(name="anonymous", quota=3, window_seconds=60),
        ],
    )
    async with client_for(create_app(settings)) as client:
        forged = {"Authorization": "Bearer not.a.jwt"}
        statuses = [(await client.get(ORDERS, headers=forged)).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        refused = assert_problem(await client.get(ORDERS, headers=forged), 429)
        assert refused["type"] == "urn:mercato:problem:rate-limited"
        # A caller with a good token has a limit of its own.
        good = {"Authorization": f"Bearer {dev_token()}"}
        assert (await client.get(ORDERS, headers=good)).status_code == 200
    assert len(upstream.requests) == 1
