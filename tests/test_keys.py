"""Key layout: prefixes, namespaces, hash tags and escaping of user text."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from pyramid_transient.keys import KeySpace, glob_escape, quote, unquote


def test_layout_with_prefix() -> None:
    assert KeySpace("myapp", "store").key("a", "b") == "myapp:store:a:b"


def test_layout_without_prefix_has_no_leading_separator() -> None:
    assert KeySpace("", "token").key("x") == "token:x"


def test_namespace_goes_between_prefix_and_capability() -> None:
    assert KeySpace("myapp", "safe", "celery").key("m") == "myapp:celery:safe:m"


def test_tagged_keys_share_a_cluster_slot() -> None:
    from redis.crc import key_slot

    ks = KeySpace("myapp", "store")
    slots = {key_slot(ks.tagged("users", part).encode()) for part in ("a", "b", "c.d", "zz")}
    assert len(slots) == 1


def test_tag_text_with_braces_cannot_escape_the_tag() -> None:
    from redis.crc import key_slot

    ks = KeySpace("p", "store")
    key = ks.tagged("a}b", "x")
    assert key == "p:store:{a%7Db}:x"
    assert key_slot(key.encode()) == key_slot(b"{a%7Db}")


@given(st.text())
def test_quote_round_trips_and_leaves_no_separator(text: str) -> None:
    quoted = quote(text)
    assert unquote(quoted) == text
    assert not set(quoted) & set(":{} \t\r\n")


def test_distinct_texts_give_distinct_keys() -> None:
    ks = KeySpace("", "model")
    assert ks.key(quote("a:b"), quote("c")) != ks.key(quote("a"), quote("b:c"))


def test_glob_escape_matches_only_itself(transient_redis: redis.Redis) -> None:
    transient_redis.set("x*y", 1)
    transient_redis.set("xzzy", 1)
    transient_redis.set("x[ab]y", 1)
    transient_redis.set("xay", 1)
    assert set(transient_redis.scan_iter(match=glob_escape("x*y"))) == {b"x*y"}
    assert set(transient_redis.scan_iter(match=glob_escape("x[ab]y"))) == {b"x[ab]y"}


@pytest.mark.parametrize("text", ["*", "?", "[a]", "\\"])
def test_pattern_escapes_user_text(text: str) -> None:
    assert KeySpace("", "store").pattern(text) == "store:" + glob_escape(text) + ":*"
