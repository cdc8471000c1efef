"""The models demo page, driven through webtest against the suite's Redis server."""

from __future__ import annotations

from typing import Any

import webtest
from pyramid.config import Configurator

from pyramid_transient.demo.views_models import DemoTask


def token(testapp: webtest.TestApp) -> str:
    return testapp.get("/models").html.select_one("#add input[name=csrf_token]")["value"]


def post(testapp: webtest.TestApp, fields: dict[str, str], **kwargs: Any) -> Any:
    return testapp.post("/models", {"csrf_token": token(testapp), **fields}, **kwargs)


def add(testapp: webtest.TestApp, title: str, priority: int = 1, status: str = "todo") -> Any:
    return post(
        testapp, {"action": "add", "title": title, "priority": str(priority), "status": status}
    )


def titles(page: Any) -> list[str]:
    return [row.find_all("td")[0].text for row in page.html.select("tr.task")]


def test_page_lists_no_task_at_first(testapp: webtest.TestApp) -> None:
    page = testapp.get("/models")
    assert "0 shown, 0 in all." in page.text


def test_added_task_is_listed_after_the_redirect(testapp: webtest.TestApp) -> None:
    response = add(testapp, "write docs", 3)
    assert response.status_int == 303
    assert titles(response.follow()) == ["write docs"]


def test_filter_on_the_status_index(testapp: webtest.TestApp) -> None:
    add(testapp, "a", status="todo")
    add(testapp, "b", status="done")
    page = testapp.get("/models", {"status": "done"})
    assert titles(page) == ["b"]


def test_filter_on_minimum_priority(testapp: webtest.TestApp) -> None:
    add(testapp, "low", 1)
    add(testapp, "high", 5)
    assert titles(testapp.get("/models", {"min_priority": "3"})) == ["high"]


def test_advance_moves_the_status_on(testapp: webtest.TestApp) -> None:
    add(testapp, "a")
    pk = testapp.get("/models").html.select_one("input[name=pk]")["value"]
    post(testapp, {"action": "advance", "pk": pk})
    assert titles(testapp.get("/models", {"status": "doing"})) == ["a"]


def test_delete_removes_the_task(testapp: webtest.TestApp) -> None:
    add(testapp, "a")
    pk = testapp.get("/models").html.select_one("input[name=pk]")["value"]
    post(testapp, {"action": "delete", "pk": pk})
    assert titles(testapp.get("/models")) == []


def test_invalid_task_is_a_400_with_the_reason(testapp: webtest.TestApp) -> None:
    page = post(testapp, {"action": "add", "title": "", "priority": "9"}, status=400)
    assert "invalid task" in page.text
    assert "0 in all" in page.text


def test_unknown_task_is_a_400(testapp: webtest.TestApp) -> None:
    page = post(testapp, {"action": "delete", "pk": "nope"}, status=400)
    assert "does not exist any more" in page.text


def test_title_is_escaped(testapp: webtest.TestApp) -> None:
    add(testapp, "<script>x</script>")
    assert "&lt;script&gt;x&lt;/script&gt;" in testapp.get("/models").text


def test_failed_request_writes_nothing(make_app: Any) -> None:
    app = make_app()

    def boom(request: Any) -> Any:
        DemoTask(title="never").save(on_commit=True)
        raise RuntimeError("the view failed after saving")

    config = Configurator(registry=app.app.registry)
    config.add_route("boom", "/boom")
    config.add_view(boom, route_name="boom")
    config.commit()
    app.get("/boom", status=500)  # the demo's 500 page
    assert "0 in all" in app.get("/models").text
