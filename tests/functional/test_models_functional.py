"""The models demo page, driven through webtest against the suite's Redis server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
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


# ------------------------------------------------------------------ hostile input


def error_of(page: Any) -> str:
    return page.html.find(id="error").text  # type: ignore[no-any-return]


@pytest.mark.parametrize("min_priority", ["9" * 5000, "99999999999999999999", "²", "0", "6", "x"])
def test_a_min_priority_outside_1_to_5_is_a_readable_400(
    testapp: webtest.TestApp, min_priority: str
) -> None:
    add(testapp, "a")
    page = testapp.get("/models", {"min_priority": min_priority}, status=400)
    assert "Min priority must be a whole number from 1 to 5" in error_of(page)
    assert len(page.text) < 20_000


def test_an_unknown_status_filter_is_a_readable_400(testapp: webtest.TestApp) -> None:
    page = testapp.get("/models", {"status": "bogus"}, status=400)
    assert "Unknown status 'bogus'" in error_of(page)


@pytest.mark.parametrize("priority", ["9" * 5000, "99999999999999999999", "²"])
def test_a_priority_of_many_digits_is_a_readable_400(
    testapp: webtest.TestApp, priority: str
) -> None:
    page = post(testapp, {"action": "add", "title": "t", "priority": priority}, status=400)
    assert "priority must be a whole number from 1 to 5" in error_of(page)
    assert "0 in all" in page.text


def test_a_pk_of_thousands_of_characters_is_a_400(testapp: webtest.TestApp) -> None:
    page = post(testapp, {"action": "delete", "pk": "k" * 5000}, status=400)
    assert "does not exist any more" in error_of(page)


def test_a_save_that_fails_after_the_commit_is_logged_and_the_redirect_still_answered(
    testapp: webtest.TestApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What the module docstring says: the redirect does not prove the deferred write.
    import pyramid_transient.transactions as transactions

    real_finish = transactions.AfterCommit.tpc_finish

    def failing_finish(self: Any, txn: Any) -> None:
        self.work = [(what, _fail, idempotent) for what, _action, idempotent in self.work]
        real_finish(self, txn)

    def _fail() -> None:
        raise OSError("Redis went away after the commit")

    token_value = token(testapp)
    monkeypatch.setattr(transactions.AfterCommit, "tpc_finish", failing_finish)
    with caplog.at_level(logging.ERROR, logger="pyramid_transient.transactions"):
        response = testapp.post(
            "/models", {"csrf_token": token_value, "action": "add", "title": "lost"}
        )
    assert response.status_int == 303
    assert "failed after the transaction committed" in caplog.text
    monkeypatch.undo()
    page = testapp.get("/models")
    assert "0 in all" in page.text
    assert "may not have been applied" in page.html.select_one("#messages .msg-error").text


def test_a_deferred_save_lost_after_the_commit_is_told_to_the_visitor(
    make_app: Any, transient_redis_url: str, fault_proxy: Any
) -> None:
    # Both sends of the save (the first and the one re-sent after its lost reply) have
    # their replies lost: the write's outcome is unknown, and the visitor is told so.
    port = int(transient_redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = fault_proxy(port)
    testapp = make_app(**{"transient.url": f"redis://127.0.0.1:{proxy.port}"})
    csrf = token(testapp)
    proxy.lose_replies(b"EVALSHA", times=2)
    response = testapp.post(
        "/models",
        {"csrf_token": csrf, "action": "add", "title": "t", "priority": "1", "status": "todo"},
    )
    assert response.status_int == 303
    assert proxy.count(b"EVALSHA") >= 2
    page = response.follow()
    message = page.html.select_one("#messages .msg-error")
    assert message is not None
    assert "may not have been applied" in message.text
    assert "Check the list below" in message.text
    # it was applied (the replies were lost after the server ran it), and listed
    assert titles(page) == ["t"]
    # shown once
    assert testapp.get("/models").html.select_one("#messages .msg-error") is None


def test_a_deferred_save_that_works_tells_nothing(testapp: webtest.TestApp) -> None:
    page = add(testapp, "fine").follow()
    assert page.html.select_one("#messages").text.strip() == ""
