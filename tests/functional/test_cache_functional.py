"""The cache demo page through webtest: cached list and detail pages, a form that updates."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
import webtest

from pyramid_transient.cache import get_region
from pyramid_transient.connection import get_manager

SESSION_FACTORY = "pyramid_transient.demo.models.session_factory"


def build_of(page: webtest.TestResponse) -> str:
    match = re.search(r'<code class="build">(\w+)</code>', page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture(params=["hooks from the demo", "hooks from the setting"])
def app(request: Any, make_app: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    if request.param == "hooks from the setting":
        return make_app(**{"transient.cache.sqlalchemy_session": SESSION_FACTORY})
    return make_app()


def test_list_page_is_served_from_the_cache(app: webtest.TestApp) -> None:
    first = app.get("/cache")
    assert "Teapot" in first.text
    assert build_of(app.get("/cache")) == build_of(first)


def test_detail_page_is_served_from_the_cache(app: webtest.TestApp) -> None:
    first = app.get("/cache/1")
    assert "<h1>Teapot</h1>" in first.text
    assert build_of(app.get("/cache/1")) == build_of(first)


def test_updating_a_row_shows_on_both_pages_at_the_next_request(app: webtest.TestApp) -> None:
    listing, detail, other = app.get("/cache"), app.get("/cache/1"), app.get("/cache/2")
    form = detail.forms[0]
    form["name"] = "Teapot <deluxe>"
    form["price"] = "30"
    after = form.submit().follow()
    assert "<h1>Teapot &lt;deluxe&gt;</h1>" in after.text and "Price: 30" in after.text
    assert build_of(after) != build_of(detail)
    new_listing = app.get("/cache")
    assert "Teapot &lt;deluxe&gt;" in new_listing.text
    assert build_of(new_listing) != build_of(listing)
    assert build_of(app.get("/cache/2")) == build_of(other)  # another row stays cached


def test_unknown_item_is_not_found(app: webtest.TestApp) -> None:
    app.get("/cache/999", status=404)
    token = app.get("/cache/1").html.select_one("#edit input[name=csrf_token]")["value"]
    app.post("/cache/999", {"csrf_token": token, "name": "x", "price": "1"}, status=404)


def test_home_page_links_the_cache_page(app: webtest.TestApp) -> None:
    assert "/cache" in app.get("/").text


def test_cached_values_live_in_the_cache_database(app: webtest.TestApp) -> None:
    app.get("/cache/1")
    manager = get_manager(app.app.registry)
    region = get_region(app.app.registry, "default")
    assert region.backend.writer_client.connection_pool is manager.get("cache").connection_pool


# ------------------------------------------------------------------ hostile input


def edit(app: webtest.TestApp, status: int | str = 400, **fields: str) -> webtest.TestResponse:
    form = app.get("/cache/1").forms["edit"]
    for name, value in fields.items():
        form[name] = value
    return form.submit(status=status)


@pytest.mark.parametrize("item_id", ["99999999999999999999", "9" * 5000])
def test_an_id_of_many_digits_is_a_styled_404(app: webtest.TestApp, item_id: str) -> None:
    page = app.get(f"/cache/{item_id}", status=404)
    assert page.html.find(id="home-link") is not None
    token = app.get("/cache/1").html.select_one("#edit input[name=csrf_token]")["value"]
    app.post(f"/cache/{item_id}", {"csrf_token": token, "name": "x", "price": "1"}, status=404)


@pytest.mark.parametrize(
    "price", ["9" * 5000, "99999999999999999999", "ten", "-1", "²", ""], ids=repr
)
def test_an_invalid_price_is_a_400_saying_why_and_changes_nothing(
    app: webtest.TestApp, price: str
) -> None:
    page = edit(app, name="Changed", price=price)
    assert "The price must be a whole number from 0 to 1000000" in page.html.find(id="error").text
    assert len(page.text) < 20_000
    after = app.get("/cache/1")
    assert "<h1>Teapot</h1>" in after.text and "Price: 25" in after.text


@pytest.mark.parametrize("name", ["   ", "n" * 101])
def test_an_invalid_name_is_a_400_saying_why_and_changes_nothing(
    app: webtest.TestApp, name: str
) -> None:
    page = edit(app, name=name, price="30")
    assert "The name must be 1 to 100 characters long" in page.html.find(id="error").text
    assert "Price: 25" in app.get("/cache/1").text


# ------------------------------------------------------------------ ptransient restore


def test_a_restore_never_brings_back_a_page_invalidated_after_the_backup(
    make_app: Callable[..., webtest.TestApp], app_settings: dict[str, str], tmp_path: Any
) -> None:
    # The stale-page scenario of issue 15: view, back up (region values included), edit
    # the row (its commit deletes the token), restore without --replace, view again.
    from pyramid_transient.scripts.ptransient import main

    app = make_app()
    ini = tmp_path / "app.ini"
    settings = {"transient.db.default": "0", "transient.db.sessions": "1",
                "transient.db.cache": "1", "transient.db.celery": "3", **app_settings}  # fmt: skip
    ini.write_text(
        "[app:main]\nuse = egg:pyramid-transient#demo\n"
        + "".join(f"{k} = {v}\n" for k, v in settings.items())
    )
    detail = app.get("/cache/1")
    backup = tmp_path / "b.jsonl"
    argv = [str(ini), "backup", "--capability", "cache", "--capability", "sessions", str(backup)]
    assert main(argv, out=io.StringIO(), err=io.StringIO()) == 0
    form = detail.forms["edit"]
    form["name"] = "Teapot v2"
    assert form.submit().status_int == 303  # committed; the page is not viewed before

    for replace in ([], ["--replace"]):
        out = io.StringIO()
        assert main([str(ini), "restore", *replace, str(backup)], out=out, err=out) == 0
        page = app.get("/cache/1")
        assert "<h1>Teapot v2</h1>" in page.text and build_of(page) != build_of(detail)

    # After losing the whole cache database too: the restored values are unreachable
    # (their tokens are gone for good), the page is built afresh from the row.
    assert main([str(ini), "flush", "--db", "cache", "--yes"], out=io.StringIO()) == 0
    assert not list(get_manager(app.app.registry).get("cache").scan_iter(match="*:cache:*"))
    assert main([str(ini), "restore", str(backup)], out=io.StringIO(), err=io.StringIO()) == 0
    page = app.get("/cache/1")
    assert "<h1>Teapot v2</h1>" in page.text and build_of(page) != build_of(detail)
