"""The store's demo page, driven through webtest against the demo app of development.ini."""

from __future__ import annotations

from typing import Any

import pytest

from pyramid_transient.connection import get_manager
from pyramid_transient.store import section


def token(testapp: Any) -> str:
    return testapp.get("/store").html.select_one("#set-form input[name=csrf_token]")["value"]


def post(testapp: Any, **form: str) -> Any:
    return testapp.post("/store", {"csrf_token": token(testapp), **form}, status="*")


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
    post(testapp, action="set", path="cart", value="1")
    manager = get_manager(testapp.app.registry)
    key = manager.keyspace("store").tagged("demo", "data")
    assert key.startswith(app_settings["transient.key_prefix"] + ":store:")
    assert manager.get("store").hgetall(key) == {b"cart.": b"1"}


def test_an_infinite_expiry_is_a_400_naming_it(testapp: Any) -> None:
    response = post(testapp, action="set", path="a", value="1", expire="inf")
    assert response.status_int == 400
    assert "not 'inf'" in response.html.find(id="error").text


# ------------------------------------------------------------------ forms as shown, limits


def error_of(response: Any) -> str:
    return response.html.find(id="error").text  # type: ignore[no-any-return]


def test_the_set_form_as_shown_is_accepted(testapp: Any) -> None:
    form = testapp.get("/store").forms["set-form"]
    assert form["value"].value == '{"apples": 3}'
    page = form.submit(status=303).follow()
    assert '"apples": 3' in page.html.find(id="tree").text


@pytest.mark.parametrize("deep", [100_000, 4_000, 11], ids=["100k", "4k", "11"])
def test_json_nested_too_deep_is_a_4xx_saying_so(testapp: Any, deep: int) -> None:
    response = post(testapp, action="set", path="a", value="[" * deep + "]" * deep)
    assert response.status_int in (400, 413)
    assert "at most" in error_of(response)
    assert testapp.get("/store").html.find(id="empty") is not None


def test_a_huge_number_in_json_is_a_400(testapp: Any) -> None:
    response = post(testapp, action="set", path="a", value="9" * 5000)
    assert response.status_int == 400
    assert "not JSON" in error_of(response)


@pytest.mark.parametrize(
    ("size", "status", "limit"), [(20_000, 400, "10,000"), (100_000, 413, "65,536")]
)
def test_a_long_value_is_a_4xx_naming_the_limit(
    testapp: Any, size: int, status: int, limit: str
) -> None:
    response = post(testapp, action="set", path="a", value='"' + "x" * size + '"')
    assert response.status_int == status
    assert limit in error_of(response)
    assert len(response.body) < 20_000  # the refused value is not echoed whole


@pytest.mark.parametrize("path", [".".join(["a"] * 1000), "a" * 5000], ids=["deep", "long"])
def test_a_path_past_the_limits_is_refused_and_the_page_stays_up(testapp: Any, path: str) -> None:
    response = post(testapp, action="set", path=path, value="1")
    assert response.status_int == 400
    assert "at most" in error_of(response)
    assert testapp.get("/store").html.find(id="empty") is not None


def test_the_limits_are_stated_on_the_page(testapp: Any) -> None:
    text = testapp.get("/store").html.find(id="limits").text
    assert "8" in text and "200" in text and "10,000" in text and "10 levels" in text


def test_a_deep_tree_stored_another_way_still_renders(testapp: Any) -> None:
    section("demo", get_manager(testapp.app.registry)).set(".".join(["a"] * 1000), 1)
    page = testapp.get("/store")
    assert "too deep to show" in page.html.find(id="tree").text


def test_a_long_value_stored_another_way_is_shown_cut_short(testapp: Any) -> None:
    section("demo", get_manager(testapp.app.registry)).set("long", "y" * 100_000)
    page = testapp.get("/store")
    assert "more characters" in page.html.find(id="tree").text
    assert len(page.body) < 20_000


def test_a_nested_path_with_an_expiry_does_not_show_no_expiry(testapp: Any) -> None:
    page = post(
        testapp, action="set", path="cart.items", value='{"apples": 3}', expire="60"
    ).follow()
    (cell,) = page.html.select("#tree td.ttl")
    assert "no expiry of its own" in cell.text
    assert "demo.cart.items expires in" in cell.text


@pytest.mark.parametrize("expire", ["ten", "0", "-5", "nan", "1e400", "9" * 5000])
def test_an_expiry_that_is_not_a_number_of_seconds_is_a_readable_400(
    testapp: Any, expire: str
) -> None:
    response = post(testapp, action="set", path="a", value="1", expire=expire)
    assert response.status_int == 400
    assert "must be a number of seconds" in error_of(response)
    assert "could not convert" not in response.text


def test_delete_without_a_path_is_a_400(testapp: Any) -> None:
    response = post(testapp, action="delete", path="")
    assert response.status_int == 400
    assert "give a path" in error_of(response)
