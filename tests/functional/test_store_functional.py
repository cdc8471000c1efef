"""The store's demo page, driven through webtest against the demo app from test.ini."""

from __future__ import annotations

from typing import Any


def post(testapp: Any, **form: str) -> Any:
    return testapp.post("/store", form, status="*")


def test_store_page_starts_empty(testapp: Any) -> None:
    page = testapp.get("/store")
    assert page.html.find(id="empty") is not None


def test_set_shows_the_subtree(testapp: Any) -> None:
    response = post(testapp, action="set", path="cart", value='{"apples": 3, "pears": {"n": 1}}')
    assert response.status_int == 303
    page = response.follow()
    cell = page.html.find(id="tree").find_all("pre")[0].text
    assert '"apples": 3' in cell
    assert '"n": 1' in cell


def test_values_are_escaped_in_the_page(testapp: Any) -> None:
    post(testapp, action="set", path="x", value='"<script>alert(1)</script>"')
    page = testapp.get("/store")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


def test_add_counts_under_the_lock(testapp: Any) -> None:
    post(testapp, action="add", path="visits")
    page = post(testapp, action="add", path="visits").follow()
    rows = page.html.find(id="tree").find_all("tr")[1:]
    assert [(r.code.text, r.pre.text) for r in rows] == [("demo.visits", "2")]


def test_delete_removes_the_subtree(testapp: Any) -> None:
    post(testapp, action="set", path="cart", value='{"a": 1}')
    page = post(testapp, action="delete", path="cart").follow()
    assert page.html.find(id="empty") is not None


def test_set_with_expire_shows_the_time_to_live(testapp: Any) -> None:
    page = post(testapp, action="set", path="soon", value="1", expire="60").follow()
    assert "no expiry" not in page.text
    assert " s</td>" in page.text


def test_bad_path_is_a_400_naming_it(testapp: Any) -> None:
    response = post(testapp, action="set", path="a..b", value="1")
    assert response.status_int == 400
    assert "'a..b'" in response.html.find(id="error").text


def test_bad_json_is_a_400(testapp: Any) -> None:
    response = post(testapp, action="set", path="a", value="{nope")
    assert response.status_int == 400
    assert "not JSON" in response.text


def test_data_lives_in_the_store_database_under_the_app_prefix(
    testapp: Any, app_settings: dict[str, Any]
) -> None:
    from pyramid_transient.connection import get_manager

    post(testapp, action="set", path="cart", value="1")
    manager = get_manager(testapp.app.registry)
    key = manager.keyspace("store").tagged("demo", "data")
    assert key.startswith(app_settings["transient.key_prefix"] + ":store:")
    assert manager.get("store").hgetall(key) == {b"cart.": b"1"}


def test_an_infinite_expiry_is_a_400_naming_it(testapp: Any) -> None:
    response = post(testapp, action="set", path="a", value="1", expire="inf")
    assert response.status_int == 400
    assert "not inf" in response.html.find(id="error").text
