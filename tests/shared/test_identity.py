import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import jwt
import pytest

from mercato_shared.identity import Identity, IdentityVerifier, Role, issue_identity
from mercato_shared.identity_keys import SigningKey
from mercato_shared.problems import NotFoundError, UnauthorizedError


@pytest.fixture
def verifier(keys):
    return IdentityVerifier.from_path(keys[1], issuer="mercato-gateway")


@pytest.fixture
def private_key(keys):
    return SigningKey.from_pem(keys[0].read_bytes())


def test_round_trip(verifier, private_key):
    token = issue_identity(
        private_key, subject="alice", roles={Role.ADMIN}, issuer="mercato-gateway"
    )
    identity = verifier.verify(token)
    assert identity.subject == "alice"
    assert identity.is_admin
    assert identity.may_read("bob")


def test_customer_reads_only_own(verifier, private_key):
    token = issue_identity(
        private_key, subject="alice", roles={Role.CUSTOMER}, issuer="mercato-gateway"
    )
    identity = verifier.verify(token)
    assert identity.may_read("alice")
    assert not identity.may_read("bob")


def _claims(**overrides):
    now = int(time.time())
    claims: dict[str, object] = {"sub": "alice", "roles": ["customer"], "iss": "mercato-gateway"}
    claims |= {"iat": now, "exp": now + 30}
    claims.update(overrides)
    return claims


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(_claims(exp=int(time.time()) - 60, iat=int(time.time()) - 80), id="expired"),
        pytest.param(_claims(iss="someone-else"), id="wrong-issuer"),
        pytest.param(_claims(exp=int(time.time()) + 3600), id="lifetime-too-long"),
        pytest.param(_claims(roles=["root"]), id="unknown-role"),
        pytest.param({k: v for k, v in _claims().items() if k != "sub"}, id="no-subject"),
        pytest.param(_claims(sub="a\x00b"), id="nul-in-subject"),
        pytest.param(_claims(sub="x" * 256), id="subject-too-long"),
        pytest.param(_claims(sub=7), id="subject-not-a-string"),
    ],
)
def test_rejects_bad_claims(verifier, private_key, claims):
    token = jwt.encode(claims, private_key.key, algorithm="ES256")
    with pytest.raises(UnauthorizedError):
        verifier.verify(token)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _hs256_by_hand(claims, secret):
    # PyJWT refuses to HMAC with a PEM key, so an attacker's token is built by hand.
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def _unsigned(claims):
    return (_b64(b'{"alg":"none"}') + b"." + _b64(json.dumps(claims).encode()) + b".").decode()


def test_rejects_other_key_and_other_algorithms(verifier, keys, tmp_path):
    from tests.infra import write_keypair

    other_private, _ = write_keypair(tmp_path)
    forged = jwt.encode(_claims(), other_private.read_bytes(), algorithm="ES256")
    with pytest.raises(UnauthorizedError):
        verifier.verify(forged)
    # HS256 "signed" with the public key: the classic algorithm-confusion forgery.
    with pytest.raises(UnauthorizedError):
        verifier.verify(_hs256_by_hand(_claims(), keys[1].read_bytes()))
    with pytest.raises(UnauthorizedError):
        verifier.verify(_unsigned(_claims()))


def test_a_verified_token_is_remembered_until_it_expires(verifier, private_key, monkeypatch):
    token = issue_identity(private_key, subject="alice", roles=set(), issuer="mercato-gateway")
    decoded = []
    decode = jwt.decode

    def counting(*args, **kwargs):
        decoded.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    assert verifier.verify(token).subject == "alice"
    assert verifier.verify(token).subject == "alice"
    assert len(decoded) == 1  # the second time it was remembered
    # Past its exp and the leeway, the token is verified again (where PyJWT refuses it).
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.verify(token)
    assert len(decoded) == 2


def test_another_customers_object_reads_as_missing():
    @dataclass
    class Thing:
        customer_id: str

    alice = Identity(subject="alice", roles=frozenset({Role.CUSTOMER}))
    admin = Identity(subject="root", roles=frozenset({Role.ADMIN}))
    mine, theirs = Thing("alice"), Thing("bob")
    assert alice.readable(mine, missing="no such thing") is mine
    assert admin.readable(theirs, missing="no such thing") is theirs
    for found in (theirs, None):
        with pytest.raises(NotFoundError, match="no such thing"):
            alice.readable(found, missing="no such thing")
