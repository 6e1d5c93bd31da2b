"""Identity tokens: signed once per caller, re-signed before services could see them expire."""

import os
import subprocess

import jwt
import pytest

from gateway.identity import IdentitySigner
from mercato_shared import identity_keys
from mercato_shared.identity import Identity, IdentityVerifier, Role
from mercato_shared.identity_keys import SigningKeyFile
from tests.infra import FakeClock

ISSUER = "mercato-gateway"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def signer(keys, clock):
    return IdentitySigner(SigningKeyFile(keys[0]), issuer=ISSUER, ttl_seconds=30, clock=clock)


def alice(*roles: Role) -> Identity:
    return Identity(subject="alice", roles=frozenset(roles or (Role.CUSTOMER,)))


def test_a_token_says_who_calls_and_verifies(signer, keys):
    token = signer.token_for(alice(Role.CUSTOMER, Role.ADMIN))
    identity = IdentityVerifier.from_path(keys[1], issuer=ISSUER).verify(token)
    assert identity.subject == "alice"
    assert identity.roles == frozenset({Role.CUSTOMER, Role.ADMIN})


def test_reused_for_half_its_lifetime_then_signed_again(signer, clock):
    first = signer.token_for(alice())
    clock.now += 14.9
    assert signer.token_for(alice()) == first
    assert signer.signed == 1
    clock.now += 0.1
    assert signer.token_for(alice()) != first
    assert signer.signed == 2


def test_subject_and_roles_each_get_their_own_token(signer):
    tokens = {
        signer.token_for(alice()),
        signer.token_for(alice(Role.ADMIN)),
        signer.token_for(Identity(subject="bob", roles=frozenset({Role.CUSTOMER}))),
    }
    assert len(tokens) == 3
    assert signer.signed == 3


def test_many_callers_keep_the_cache_bounded(keys, clock):
    signer = IdentitySigner(
        SigningKeyFile(keys[0]), issuer=ISSUER, ttl_seconds=30, max_entries=3, clock=clock
    )
    for n in range(5):
        signer.token_for(Identity(subject=f"user-{n}", roles=frozenset()))
    assert len(signer) == 3
    # The oldest callers were forgotten: they are signed again, the newest are not.
    signer.token_for(Identity(subject="user-4", roles=frozenset()))
    assert signer.signed == 5
    signer.token_for(Identity(subject="user-0", roles=frozenset()))
    assert signer.signed == 6
    assert len(signer) == 3


def test_expired_entries_make_room_before_live_ones(keys, clock):
    signer = IdentitySigner(
        SigningKeyFile(keys[0]), issuer=ISSUER, ttl_seconds=30, max_entries=2, clock=clock
    )
    signer.token_for(Identity(subject="old", roles=frozenset()))
    clock.now += 20
    signer.token_for(Identity(subject="recent", roles=frozenset()))
    signer.token_for(Identity(subject="new", roles=frozenset()))
    signer.token_for(Identity(subject="recent", roles=frozenset()))
    assert signer.signed == 3


def test_a_new_signing_key_is_used_at_once_for_every_caller(keys, clock, tmp_path):
    path = tmp_path / "identity.pem"
    path.write_bytes(keys[0].read_bytes())
    key_file = SigningKeyFile(path, clock=clock)
    signer = IdentitySigner(key_file, issuer=ISSUER, ttl_seconds=30, clock=clock)
    before = signer.token_for(alice())
    replacement = subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        check=True,
        capture_output=True,
    ).stdout
    staged = tmp_path / "staged.pem"
    staged.write_bytes(replacement)
    os.replace(staged, path)
    clock.now += identity_keys.RELOAD_CHECK_SECONDS
    after = signer.token_for(alice())  # well within the old token's reuse window
    assert jwt.get_unverified_header(after)["kid"] != jwt.get_unverified_header(before)["kid"]
    assert jwt.get_unverified_header(after)["kid"] == key_file.current.kid
