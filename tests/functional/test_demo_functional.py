"""The demo as a whole, as development.ini builds it: every form, error pages, the layout,
and what a visitor may never see."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import webtest
from pyramid.config import Configurator

from pyramid_transient.testing import free_port

HOME = "http://localhost/"


def crawl(app: webtest.TestApp, start: str = HOME, limit: int = 50) -> list[str]:
    """Every HTML page of the demo reachable by links from ``start`` (same host only)."""
    seen, queue = [start], [start]
    while queue:
        url = queue.pop(0)
        page = app.get(url)
        if page.content_type != "text/html":
            continue
        for link in page.html.find_all("a", href=True):
            target = link["href"].split("#")[0]
            if urlsplit(target).netloc == "localhost" and target not in seen:
                assert len(seen) < limit, f"more than {limit} pages: {seen}"
                seen.append(target)
                queue.append(target)
    return [url for url in seen if app.get(url).content_type == "text/html"]


def post_forms(page: webtest.TestResponse) -> Iterator[tuple[Any, str | None, str | None, tuple]]:
    """``(form, button name, button value, signature)`` for each way to submit each
    ``<form method="post">`` of ``page``: one per named submit button, else one."""
    for form in page.forms.values():
        if form.method.lower() != "post":
            continue
        hidden = tuple(
            (name, field.value)
            for name, fields in form.fields.items()
            for field in fields
            if field.attrs.get("type") == "hidden" and name != "csrf_token"
        )
        buttons = [
            (name, field.value_if_submitted())
            for name, fields in form.fields.items()
            for field in fields
            if isinstance(field, webtest.forms.Submit)
        ]
        for name, value in buttons or [(None, None)]:
            yield form, name, value, (form.action, hidden, name, value)


def fill_required(form: Any) -> None:
    """Give a required field the page left empty a value, as a visitor would."""
    for fields in form.fields.values():
        for field in fields:
            if "required" in field.attrs and not field.value:
                field.value = "x"


def test_every_post_form_refuses_a_missing_or_wrong_token_and_accepts_its_own(
    testapp: webtest.TestApp,
) -> None:
    checked = []
    for url in crawl(testapp):
        done: set[tuple] = set()
        while True:  # forms appear as others create data (a row's delete button)
            page = testapp.get(url)
            todo = [f for f in post_forms(page) if f[3] not in done]
            if not todo:
                break
            form, button, value, signature = todo[0]
            done.add(signature)
            fill_required(form)
            fields = form.submit_fields(button, submit_value=value)
            assert (
                "csrf_token",
                page.html.find("input", attrs={"name": "csrf_token"})["value"],
            ) in fields, f"{signature} of {url} has no csrf_token field"
            for token in (None, "wrong"):
                crafted = [(k, v) for k, v in fields if k != "csrf_token"]
                if token is not None:
                    crafted.append(("csrf_token", token))
                refused = testapp.post(form.action, crafted, status=400)
                assert "CSRF token" in refused.html.find(id="error").text, signature
            accepted = testapp.post(form.action, fields, status="*")
            assert accepted.status_int < 400, (url, signature, accepted.text[:2000])
            checked.append((url, signature))
    # Some forms only exist once data does (a task's buttons, a safe entry's Delete): the
    # walk must have reached them, or it proves little.
    actions = {(urlsplit(url).path, sig[2], sig[3]) for url, sig in checked}
    assert ("/models", "action", "delete") in actions, checked
    assert any(sig[0].endswith("/safe/delete") for _url, sig in checked), checked
    assert len({sig[0] for _url, sig in checked}) >= 10, checked


def test_get_forms_do_not_change_anything_so_only_posts_carry_a_token(
    testapp: webtest.TestApp,
) -> None:
    for url in crawl(testapp):
        for form in testapp.get(url).forms.values():
            if form.method.lower() == "get":
                assert "csrf_token" not in form.fields


# ------------------------------------------------------------------ layout


def test_every_page_has_a_viewport_one_main_and_labelled_fields(
    testapp: webtest.TestApp,
) -> None:
    for url in crawl(testapp):
        page = testapp.get(url)
        assert page.html.find("meta", attrs={"name": "viewport"}) is not None, url
        assert len(page.html.find_all("main")) == 1, url
        ids = [tag["id"] for tag in page.html.find_all(id=True)]
        assert len(ids) == len(set(ids)), (url, ids)
        labelled = {label.get("for") for label in page.html.find_all("label")}
        for field in page.html.find_all(["input", "select", "textarea"]):
            if field.get("type") in ("hidden", "submit"):
                continue
            inside = field.find_parent("label") is not None
            assert inside or field.get("id") in labelled, (url, str(field))


def test_long_text_wraps_instead_of_widening_the_page(testapp: webtest.TestApp) -> None:
    style = testapp.get("/").html.find("style").text
    assert "overflow-wrap:anywhere" in style.replace(" ", "")
    assert "white-space:pre-wrap" in style.replace(" ", "")


# ------------------------------------------------------------------ error pages


def test_an_unknown_page_is_a_styled_404_with_a_link_home(testapp: webtest.TestApp) -> None:
    page = testapp.get("/no-such-page", status=404)
    assert page.content_type == "text/html"
    assert page.html.find("meta", attrs={"name": "viewport"}) is not None
    assert page.html.find(id="home-link")["href"] == HOME
    assert "404" in page.html.find("h1").text


def test_a_wrong_method_is_a_styled_4xx_without_internals(testapp: webtest.TestApp) -> None:
    page = testapp.put("/store", status="4*")
    assert page.html.find(id="home-link") is not None
    assert "predicate" not in page.text


def test_a_missing_csrf_token_is_a_styled_400_that_says_what_to_do(
    testapp: webtest.TestApp,
) -> None:
    page = testapp.post("/sessions/increment", status=400)
    assert "Reload the page" in page.html.find(id="error").text
    assert page.html.find(id="home-link") is not None


def test_a_failing_view_is_a_styled_500_that_logs_but_never_shows_the_traceback(
    testapp: webtest.TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(request: Any) -> Any:
        raise RuntimeError("internal detail 1234")

    config = Configurator(registry=testapp.app.registry)
    config.add_route("boom", "/boom")
    config.add_view(boom, route_name="boom")
    config.commit()
    with caplog.at_level(logging.ERROR, logger="pyramid_transient.demo"):
        page = testapp.get("/boom", status=500)
    assert "internal detail 1234" not in page.text and "Traceback" not in page.text
    assert page.html.find(id="home-link") is not None
    assert "internal detail 1234" in caplog.text and "Traceback" in caplog.text


# ------------------------------------------------------------------ no credentials shown


def test_the_home_page_never_shows_the_server_url_or_its_password(
    make_app: Callable[..., webtest.TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with caplog.at_level(logging.INFO, logger="pyramid_transient.demo"):
        app = make_app(**{"transient.url": f"redis://:s3cretpw@127.0.0.1:{port}/0"})
    page = app.get("/")
    assert "s3cretpw" not in page.text
    assert str(port) not in page.text and "127.0.0.1" not in page.text
    assert "a Redis server" in page.html.find(id="backend").text
    assert f"redis://:***@127.0.0.1:{port}" in caplog.text  # logged, redacted
    assert "s3cretpw" not in caplog.text


def test_the_home_page_links_every_capability_page(testapp: webtest.TestApp) -> None:
    paths = {urlsplit(a["href"]).path for a in testapp.get("/").html.select("#pages a")}
    assert paths == {"/sessions", "/cache", "/store", "/models", "/safe"}


def test_every_page_answers_a_readable_503_while_redis_is_down(
    make_app: Callable[..., webtest.TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    from pyramid_transient.testing import RedisServer

    with RedisServer() as server:
        app = make_app(**{"transient.url": server.url})
        pages = [url for url in crawl(app) if url != HOME]
        assert len(pages) >= 5  # one per capability
        # every page with a session cookie, as a returning visitor has
        app.post("/sessions/increment", {"csrf_token": _token(app)})
        server.stop()
        with caplog.at_level(logging.ERROR, logger="pyramid_transient.demo"):
            for url in pages:
                down = app.get(url, expect_errors=True)
                if urlsplit(url).path == "/cache":
                    # caches fail open: the list is built from the database, uncached
                    # (an item page reads the session, for its messages: a 503)
                    assert down.status_int == 200, (url, down.status)
                    continue
                assert down.status_int == 503, (url, down.status)
                assert down.headers["Retry-After"], url
                assert "try again" in down.html.find(id="error").text, url
                assert down.html.find(id="home-link") is not None, url
                assert str(server.port) not in down.text and "127.0.0.1" not in down.text
        assert "Redis is unavailable" in caplog.text
        assert app.get(HOME).status_int == 200  # a page that needs no Redis still answers


def _token(app: webtest.TestApp) -> str:
    page = app.get("/sessions")
    field = page.html.find("input", attrs={"name": "csrf_token"})
    assert field is not None
    return str(field["value"])
