"""The demo's module-safe page, driven through webtest (the app of development.ini)."""

from __future__ import annotations

import pytest
import webtest

from pyramid_transient.connection import get_manager
from pyramid_transient.safe import Safe, get_safe


def _submit(
    app: webtest.TestApp, form_id: str, status: int | str = 303, **fields: str | bool
) -> webtest.TestResponse:
    form = app.get("/safe").forms[form_id]
    for name, value in fields.items():
        form[name] = value
    return form.submit(status=status)


def _entries(app: webtest.TestApp) -> dict[str, str]:
    page = app.get("/safe")
    rows = page.html.select("#entries tr")[1:]
    return {row.select("td")[0].get_text(): row.select("td")[1].get_text() for row in rows}


def test_the_page_counts_its_views_atomically(testapp: webtest.TestApp) -> None:
    testapp.get("/safe")
    page = testapp.get("/safe")
    assert page.html.select_one("#views").get_text() == "2"


def test_an_empty_safe_says_so(testapp: webtest.TestApp) -> None:
    assert testapp.get("/safe").html.select_one("#empty") is not None


def test_a_text_value_is_stored_and_shown_escaped(testapp: webtest.TestApp) -> None:
    _submit(testapp, "set", key="greeting", value="<b>hi</b>")
    page = testapp.get("/safe")
    assert "&lt;b&gt;hi&lt;/b&gt;" in page.text
    assert _entries(testapp) == {"greeting": "'<b>hi</b>'"}


def test_a_json_value_keeps_its_type(testapp: webtest.TestApp) -> None:
    _submit(testapp, "set", key="sizes", value="[1, 2.5, null]", json=True)
    assert _entries(testapp) == {"sizes": "[1, 2.5, None]"}


def test_a_value_that_is_not_json_is_refused(testapp: webtest.TestApp) -> None:
    page = _submit(testapp, "set", status=400, key="k", value="[1,", json=True)
    assert "is not JSON" in page.html.select_one("#error").get_text()
    assert _entries(testapp) == {}


def test_a_key_without_a_name_is_refused(testapp: webtest.TestApp) -> None:
    page = _submit(testapp, "set", status=400, key="  ", value="x")
    assert "Give the key a name" in page.text


def test_update_stores_every_line(testapp: webtest.TestApp) -> None:
    _submit(testapp, "update", lines='a = 1\nb = {"c": [true]}\n')
    assert _entries(testapp) == {"a": "1", "b": "{'c': [True]}"}


def test_update_with_one_bad_line_stores_nothing(testapp: webtest.TestApp) -> None:
    page = _submit(testapp, "update", status=400, lines="a = 1\nb = not json\n")
    assert "line 2" in page.html.select_one("#error").get_text()
    assert _entries(testapp) == {}


def test_delete_removes_the_key(testapp: webtest.TestApp) -> None:
    _submit(testapp, "update", lines="a = 1\nb = 2")
    testapp.get("/safe").forms[0].submit(status=303)  # the Delete button of the first row
    assert _entries(testapp) == {"b": "2"}


def test_clear_empties_the_safe_but_not_the_view_counter(testapp: webtest.TestApp) -> None:
    _submit(testapp, "set", key="a", value="1")
    _submit(testapp, "clear")
    page = testapp.get("/safe")
    assert page.html.select_one("#empty") is not None
    assert int(page.html.select_one("#views").get_text()) > 1


def test_a_post_without_the_csrf_token_is_refused(testapp: webtest.TestApp) -> None:
    testapp.post("/safe/set", {"key": "a", "value": "1"}, status=400)
    assert _entries(testapp) == {}


def test_the_safe_lives_in_one_hash_under_the_app_prefix(
    testapp: webtest.TestApp, app_settings: dict[str, str]
) -> None:
    _submit(testapp, "set", key="a", value="1")
    key = testapp.get("/safe").html.select_one("#redis-key").get_text()
    client = get_manager(testapp.app.registry).get("safe")
    assert (
        key == f"{app_settings['transient.key_prefix']}:safe:{{pyramid_transient.demo.views_safe}}"
    )
    assert client.hgetall(key) == {b"a": b'"1"'}


# ------------------------------------------------------------------ hostile input, limits


def demo_safe(app: webtest.TestApp) -> Safe:
    """The demo's safe, reached without its forms (as another module's code would)."""
    return get_safe("pyramid_transient.demo.views_safe", get_manager(app.app.registry))


def _error(page: webtest.TestResponse) -> str:
    return page.html.select_one("#error").get_text()  # type: ignore[no-any-return]


@pytest.mark.parametrize("deep", [100_000, 4_000, 11], ids=["100k", "4k", "11"])
def test_json_nested_too_deep_is_a_readable_4xx_in_set_and_update(
    testapp: webtest.TestApp, deep: int
) -> None:
    value = "[" * deep + "]" * deep
    set_page = _submit(testapp, "set", status="4*", key="k", value=value, json=True)
    update_page = _submit(testapp, "update", status="4*", lines=f"k = {value}")
    for page in (set_page, update_page):
        assert page.status_int in (400, 413)
        assert "at most" in _error(page)
    assert _entries(testapp) == {}


def test_a_text_value_past_the_limit_is_a_400(testapp: webtest.TestApp) -> None:
    page = _submit(testapp, "set", status=400, key="k", value="x" * 20_000)
    assert "10,000" in _error(page)


def test_a_long_value_stored_another_way_is_shown_cut_short(testapp: webtest.TestApp) -> None:
    demo_safe(testapp)["long"] = "y" * 100_000
    page = testapp.get("/safe")
    assert "more characters" in page.html.select_one("#entries").get_text()
    assert len(page.body) < 30_000


def test_a_deep_value_stored_another_way_still_renders(testapp: webtest.TestApp) -> None:
    deep: list[object] = []
    for _ in range(200):
        deep = [deep]
    demo_safe(testapp)["deep"] = deep
    page = testapp.get("/safe")
    assert "too deep to show" in page.html.select_one("#entries").get_text()


def test_the_limits_are_stated_on_the_page(testapp: webtest.TestApp) -> None:
    text = testapp.get("/safe").html.select_one("#limits").get_text()
    assert "200" in text and "10,000" in text and "10 levels" in text
