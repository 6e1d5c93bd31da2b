"""Identity keys: named by thumbprint, read from a file or a directory, re-read on change."""

import os
import subprocess
from pathlib import Path

import jwt
import pytest

from mercato_shared import identity_keys
from mercato_shared.identity import Identity, IdentityVerifier, Role, issue_identity
from mercato_shared.identity_keys import PublicKeySet, SigningKey, SigningKeyFile
from mercato_shared.problems import UnauthorizedError
from tests.infra import FakeClock

ISSUER = "mercato-gateway"


def keypair(directory: Path, name: str) -> tuple[Path, Path]:
    private, public = directory / f"{name}.key", directory / f"{name}.pub.pem"
    subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", private],
        check=True,
    )
    subprocess.run(
        ["openssl", "ec", "-in", private, "-pubout", "-out", public],
        check=True,
        capture_output=True,
    )
    return private, public


@pytest.fixture
def pairs(tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    return [keypair(made, name) for name in ("old", "new")]


def token(private: Path, subject: str = "alice") -> str:
    key = SigningKey.from_pem(private.read_bytes())
    return issue_identity(key, subject=subject, roles={Role.CUSTOMER}, issuer=ISSUER)


def test_a_key_is_named_by_its_thumbprint_in_every_token(pairs):
    (old, old_public), (new, _) = pairs
    one, again = SigningKey.from_pem(old.read_bytes()), SigningKey.from_pem(old.read_bytes())
    assert one.kid == again.kid != SigningKey.from_pem(new.read_bytes()).kid
    assert len(one.kid) == 43  # SHA-256, base64url without padding
    assert jwt.get_unverified_header(token(old))["kid"] == one.kid
    assert PublicKeySet(old_public).kids == {one.kid}


def test_a_directory_or_one_file_may_hold_several_keys(pairs, tmp_path):
    (old, old_public), (new, new_public) = pairs
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old_public.read_bytes() + new_public.read_bytes())
    directory = tmp_path / "keys"
    directory.mkdir()
    for public in (old_public, new_public):
        (directory / public.name).write_bytes(public.read_bytes())
    (directory / "README").write_text("not a key")
    for path in (bundle, directory):
        verifier = IdentityVerifier.from_path(path, issuer=ISSUER)
        assert verifier.verify(token(old)) == Identity("alice", frozenset({Role.CUSTOMER}))
        assert verifier.verify(token(new, "bob")).subject == "bob"


def test_a_token_without_a_key_id_needs_a_single_key(pairs, tmp_path):
    (old, old_public), (_, new_public) = pairs
    claims = jwt.decode(token(old), options={"verify_signature": False})
    bare = jwt.encode(claims, old.read_bytes(), algorithm="ES256")
    assert IdentityVerifier.from_path(old_public, issuer=ISSUER).verify(bare).subject == "alice"
    both = tmp_path / "both.pem"
    both.write_bytes(old_public.read_bytes() + new_public.read_bytes())
    with pytest.raises(UnauthorizedError, match="unknown key"):
        IdentityVerifier.from_path(both, issuer=ISSUER).verify(bare)


def test_keys_added_and_removed_are_seen_at_the_next_check(pairs, tmp_path):
    (old, old_public), (new, new_public) = pairs
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "old.pem").write_bytes(old_public.read_bytes())
    clock = FakeClock()
    verifier = IdentityVerifier(PublicKeySet(directory, clock=clock), issuer=ISSUER)
    remembered = token(old)
    assert verifier.verify(remembered).subject == "alice"
    with pytest.raises(UnauthorizedError):
        verifier.verify(token(new))

    (directory / "new.pem").write_bytes(new_public.read_bytes())
    clock.advance(identity_keys.RELOAD_CHECK_SECONDS)
    assert verifier.verify(token(new)).subject == "alice"

    (directory / "old.pem").unlink()
    clock.advance(identity_keys.RELOAD_CHECK_SECONDS)
    # Even a token verified (and remembered) before the key left is refused now.
    with pytest.raises(UnauthorizedError, match="unknown key"):
        verifier.verify(remembered)


def test_an_unreadable_key_set_keeps_the_last_good_one(pairs, tmp_path):
    (old, old_public), _ = pairs
    path = tmp_path / "identity.pub.pem"
    path.write_bytes(old_public.read_bytes())
    clock = FakeClock()
    verifier = IdentityVerifier(PublicKeySet(path, clock=clock), issuer=ISSUER)
    path.write_bytes(b"-----BEGIN PUBLIC KEY-----\ntruncat")
    clock.advance(identity_keys.RELOAD_CHECK_SECONDS)
    assert verifier.verify(token(old)).subject == "alice"


def test_the_signing_key_file_is_read_again_when_replaced(pairs, tmp_path):
    (old, _), (new, _) = pairs
    path = tmp_path / "identity.pem"
    path.write_bytes(old.read_bytes())
    clock = FakeClock()
    signing = SigningKeyFile(path, clock=clock)
    first = signing.current.kid
    staged = tmp_path / "identity.pem.new"
    staged.write_bytes(new.read_bytes())
    os.replace(staged, path)  # as an operator (or a secret volume) swaps it in
    assert not signing.refresh()  # not yet looked at
    clock.advance(identity_keys.RELOAD_CHECK_SECONDS)
    assert signing.refresh()
    assert signing.current.kid == SigningKey.from_pem(new.read_bytes()).kid != first
