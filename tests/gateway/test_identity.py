"""Identity tokens: signed once per caller, re-signed before services could see them expire."""

import pytest

from gateway.identity import IdentitySigner
from mercato_shared.identity import Identity, IdentityVerifier, Role

ISSUER = "mercato-gateway"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def signer(keys, clock):
    return IdentitySigner(keys[0].read_bytes(), issuer=ISSUER, ttl_seconds=30, clock=clock)


def alice(*roles: Role) -> Identity:
    return Identity(subject="alice", roles=frozenset(roles or (Role.CUSTOMER,)))


def test_a_token_says_who_calls_and_verifies(signer, keys):
    token = signer.token_for(alice(Role.CUSTOMER, Role.ADMIN))
    identity = IdentityVerifier.from_file(keys[1], issuer=ISSUER).verify(token)
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
        keys[0].read_bytes(), issuer=ISSUER, ttl_seconds=30, max_entries=3, clock=clock
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
        keys[0].read_bytes(), issuer=ISSUER, ttl_seconds=30, max_entries=2, clock=clock
    )
    signer.token_for(Identity(subject="old", roles=frozenset()))
    clock.now += 20
    signer.token_for(Identity(subject="recent", roles=frozenset()))
    signer.token_for(Identity(subject="new", roles=frozenset()))
    signer.token_for(Identity(subject="recent", roles=frozenset()))
    assert signer.signed == 3
