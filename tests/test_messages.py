"""Flash messages: kinds, de-duplication, peek and pop, rendering, on_commit."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import jinja2
import pytest
import transaction
from pyramid.config import Configurator
from pyramid.registry import Registry
from pyramid.request import Request

from pyramid_transient import codec
from pyramid_transient.exceptions import TransientError, UnknownMessageKind
from pyramid_transient.messages import (
    Markup,
    Message,
    flash,
    peek_messages,
    pop_messages,
    render_messages,
)


def make_registry(**settings: Any) -> Registry:
    base = {"transient.url": "memory://messages-tests", "redis.sessions.secret": "s"}
    with Configurator(settings={**base, **settings}) as config:
        config.include("pyramid_transient.sessions")
        config.include("pyramid_transient.messages")
    return config.registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def request_(registry: Registry) -> Request:
    request = Request.blank("/")
    request.registry = registry
    return request


def texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


# ------------------------------------------------------------------ queueing


def test_flashed_message_is_popped_with_its_kind(request_: Request) -> None:
    flash(request_, "Saved", "success")
    assert pop_messages(request_) == [Message("Saved", "success")]


def test_pop_removes_the_messages(request_: Request) -> None:
    flash(request_, "once")
    pop_messages(request_)
    assert pop_messages(request_) == []


def test_peek_keeps_the_messages(request_: Request) -> None:
    flash(request_, "twice")
    assert texts(peek_messages(request_)) == ["twice"]
    assert texts(pop_messages(request_)) == ["twice"]


def test_two_distinct_messages_of_one_kind_are_both_kept(request_: Request) -> None:
    flash(request_, "first", "error")
    flash(request_, "second", "error")
    assert texts(pop_messages(request_)) == ["first", "second"]


def test_same_kind_text_and_msg_id_is_a_duplicate(request_: Request) -> None:
    assert flash(request_, "same", msg_id="a") is True
    assert flash(request_, "same", msg_id="a", extra={"n": 2}) is False
    assert len(pop_messages(request_)) == 1


def test_same_text_with_another_msg_id_is_kept(request_: Request) -> None:
    flash(request_, "same", msg_id="a")
    flash(request_, "same", msg_id="b")
    assert [m.msg_id for m in pop_messages(request_)] == ["a", "b"]


def test_same_text_of_another_kind_is_kept(request_: Request) -> None:
    flash(request_, "same", "info")
    flash(request_, "same", "warning")
    assert [m.kind for m in pop_messages(request_)] == ["info", "warning"]


def test_allow_duplicate_keeps_both(request_: Request) -> None:
    flash(request_, "again")
    flash(request_, "again", allow_duplicate=True)
    assert texts(pop_messages(request_)) == ["again", "again"]


def test_pop_by_kind_leaves_the_other_kinds(request_: Request) -> None:
    flash(request_, "bad", "error")
    flash(request_, "fine", "info")
    assert texts(pop_messages(request_, ["error"])) == ["bad"]
    assert texts(pop_messages(request_)) == ["fine"]


def test_messages_come_grouped_by_kind_in_the_configured_order(request_: Request) -> None:
    flash(request_, "e", "error")
    flash(request_, "i", "info")
    flash(request_, "s", "success")
    assert texts(pop_messages(request_)) == ["i", "s", "e"]


def test_unknown_kind_is_an_error(request_: Request) -> None:
    with pytest.raises(UnknownMessageKind, match=r"'notice' .* transient\.messages\.kinds"):
        flash(request_, "x", "notice")


def test_kinds_from_settings_are_accepted() -> None:
    request = Request.blank("/")
    request.registry = make_registry(**{"transient.messages.kinds": "notice"})
    flash(request, "x", "notice")
    assert pop_messages(request) == [Message("x", "notice")]


def test_text_must_be_a_string(request_: Request) -> None:
    with pytest.raises(TypeError, match="must be a str, not int"):
        flash(request_, 42)  # type: ignore[arg-type]


def test_msg_id_must_be_a_string(request_: Request) -> None:
    with pytest.raises(TypeError, match="msg_id must be a str or None, not int"):
        flash(request_, "x", msg_id=7)  # type: ignore[arg-type]
    assert peek_messages(request_) == []


def test_extra_the_codec_cannot_store_is_refused(request_: Request) -> None:
    with pytest.raises(TypeError, match=r"flash message extra .* builtins\.object"):
        flash(request_, "x", extra={"when": object()})


def test_extra_comes_back(request_: Request) -> None:
    flash(request_, "x", extra={"field": "email"})
    assert dict(pop_messages(request_)[0].extra) == {"field": "email"}


def test_stored_messages_are_json_safe(request_: Request) -> None:
    flash(request_, "x", msg_id="m", html=True, extra={"a": 1})
    stored = request_.session.peek_flash("info")
    assert stored == [{"t": "x", "k": "info", "i": "m", "h": True, "x": {"a": 1}}]
    assert codec.decode(codec.encode(dict(request_.session))) == dict(request_.session)


def test_plain_strings_flashed_through_pyramid_are_read(request_: Request) -> None:
    request_.session.flash("native")
    request_.session.flash("native error", "error")
    assert pop_messages(request_) == [Message("native", "info"), Message("native error", "error")]


@pytest.mark.parametrize("stored", [42, "text", {"t": "x"}], ids=["int", "str", "dict"])
def test_queue_that_is_not_a_list_is_dropped_and_logged(
    request_: Request, caplog: pytest.LogCaptureFixture, stored: Any
) -> None:
    request_.session["_f_error"] = stored
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.messages"):
        assert peek_messages(request_) == []
        assert flash(request_, "after", "error") is True
    assert "'error'" in caplog.text
    assert texts(pop_messages(request_)) == ["after"]


# ------------------------------------------------------------------ rendering


def test_text_is_escaped_when_rendered() -> None:
    assert Message("<b>hi</b>").__html__() == "&lt;b&gt;hi&lt;/b&gt;"


def test_html_message_is_rendered_as_is() -> None:
    assert Message("<b>hi</b>", html=True).__html__() == "<b>hi</b>"


def test_render_messages_marks_its_output_safe_for_jinja2() -> None:
    env = jinja2.Environment(autoescape=True)
    html = env.from_string("{{ m }}").render(m=render_messages([Message("<i>", "error")]))
    assert html == '<div class="msg msg-error" role="alert">&lt;i&gt;</div>'


def test_message_in_an_autoescaped_template_is_escaped_once() -> None:
    env = jinja2.Environment(autoescape=True)
    assert env.from_string("{{ m }}").render(m=Message("a & b")) == "a &amp; b"


def test_markup_is_its_own_html() -> None:
    assert Markup("<br>").__html__() == "<br>"


# ------------------------------------------------------------------ on_commit


@pytest.fixture
def tm_request(request_: Request) -> Any:
    manager = transaction.TransactionManager(explicit=True)
    request_.tm = manager
    request_.environ["tm.active"] = True
    manager.begin()
    yield request_
    with contextlib.suppress(transaction.interfaces.NoTransaction):
        manager.abort()


def test_on_commit_message_appears_when_the_transaction_commits(tm_request: Any) -> None:
    flash(tm_request, "done", on_commit=True)
    assert pop_messages(tm_request) == []
    tm_request.tm.commit()
    assert texts(pop_messages(tm_request)) == ["done"]


def test_on_commit_message_is_dropped_when_the_transaction_aborts(tm_request: Any) -> None:
    flash(tm_request, "never", on_commit=True)
    tm_request.tm.abort()
    assert pop_messages(tm_request) == []


def test_rolled_back_savepoint_drops_only_its_own_messages(tm_request: Any) -> None:
    flash(tm_request, "before", on_commit=True)
    savepoint = tm_request.tm.savepoint()
    flash(tm_request, "inside", on_commit=True)
    savepoint.rollback()
    flash(tm_request, "after", on_commit=True)
    tm_request.tm.commit()
    assert texts(pop_messages(tm_request)) == ["before", "after"]


def test_on_commit_duplicate_of_a_queued_message_is_dropped(tm_request: Any) -> None:
    flash(tm_request, "same")
    flash(tm_request, "same", on_commit=True)
    tm_request.tm.commit()
    assert texts(pop_messages(tm_request)) == ["same"]


def test_on_commit_without_a_transaction_is_an_error(request_: Request) -> None:
    with pytest.raises(TransientError, match="pyramid_tm"):
        flash(request_, "x", on_commit=True)
