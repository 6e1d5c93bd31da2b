"""Entity tags and If-None-Match, compared as RFC 9110 says (weakly, lists, *)."""

import re

import pytest

from mercato_shared.http_cache import none_match, strong_etag

TAG = strong_etag(b'{"sku":"MUG-BLUE"}')


def test_a_strong_etag_is_quoted_and_depends_on_the_body_only():
    assert TAG == strong_etag(b'{"sku":"MUG-BLUE"}')
    assert TAG != strong_etag(b'{"sku":"MUG-RED"}')
    assert re.fullmatch(r'"[0-9a-f]{32}"', TAG)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (TAG, True),
        (f"W/{TAG}", True),
        (f'"a", {TAG}', True),
        (f'W/"a",W/{TAG}', True),
        ("*", True),
        (" * ", True),
        ('"a,b", "c"', False),
        ('"a"', False),
        (TAG.strip('"'), False),  # unquoted: not an entity tag
        ("", False),
        (None, False),
    ],
)
def test_if_none_match(header, matches):
    assert none_match(header, TAG) is matches


def test_a_tag_holding_a_comma_is_one_tag():
    assert none_match('"x", "a,b"', '"a,b"')
    assert not none_match('"a,b"', '"a"')


def test_nothing_matches_without_a_current_etag():
    assert not none_match("*", None)
