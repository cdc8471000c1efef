"""The demo app in a real browser: every page, every form, and the cases a visitor meets.

Pages are found from the home page's links (and theirs), forms on the pages found; each
check runs on every page the browser reaches (see ``Browser`` in conftest.py): the
viewport meta on HTML pages, and no traceback, credentials or Redis host:port anywhere.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

#: Values a visitor types into a form's empty fields that need one (by field name); a
#: field with a default is submitted as shown.
TYPED = {"title": "Water the plants", "key": "colour", "value": "blue", "path": "cart"}

#: At most this many pages are walked: the demo has about ten.
MAX_PAGES = 40

DEEP_JSON = "[" * 3000 + "]" * 3000
HUGE_NUMBER = "9" * 5000

ADD_TASK = "form:has(input[name=action][value=add])"
STORE_SET = "form:has(input[name=action][value=set])"


def crawl(browser: Any) -> dict[str, Any]:
    """Every page reachable by links from the home page: {url: Page}."""
    home = browser.url("/")
    seen: dict[str, Any] = {}
    queue = deque([home])
    while queue and len(seen) < MAX_PAGES:
        url = queue.popleft()
        if url in seen:
            continue
        seen[url] = page = browser.open(url)
        if page.mime == "text/html":
            queue.extend(link for link in browser.same_origin_links() if link not in seen)
    return seen


def capability_pages(browser: Any) -> list[str]:
    """The pages the home page links to."""
    browser.open("/")
    links = [link for link in browser.same_origin_links() if urlsplit(link).path != "/"]
    assert links, "the home page links to no page"
    return list(dict.fromkeys(links))


def html_pages(browser: Any) -> list[str]:
    """The HTML pages of :func:`crawl`, walked once per run (the first walk checks them)."""
    if not browser.pages:
        browser.pages = [url for url, page in crawl(browser).items() if page.mime == "text/html"]
    return list(browser.pages)


def fill(browser: Any, form: Any, typed: dict[str, Any]) -> None:
    """Type ``typed`` into ``form`` as a visitor would (True ticks a checkbox)."""
    from selenium.webdriver.support.select import Select

    for name, value in typed.items():
        field = form.find_element("css selector", f"[name='{name}']")
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        elif field.get_attribute("type") == "checkbox":
            if bool(value) != field.is_selected():
                field.click()
        else:
            field.clear()
            field.send_keys(value)


def fill_empty_fields(browser: Any, form: Any, where: str) -> None:
    """Type a value into each empty field that needs one (``required``, or in TYPED)."""
    for field, name, required in browser.empty_fields(form):
        if name in TYPED:
            field.send_keys(TYPED[name])
        elif required:
            pytest.fail(f"{where}: the empty required field {name!r} has no value in TYPED")


def walk_forms(browser: Any, method: str = "") -> Iterator[tuple[Any, Any, str]]:
    """(form, button, where) for each submit button of each form (of ``method``) on each
    page, the page opened afresh for each: forms that appear after another's submission
    (a new row's buttons) are walked too."""
    for url in html_pages(browser):
        done: set[str] = set()
        browser.open(url)
        for _ in range(50):
            rows = [row for row in browser.submissions(method) if row[2] not in done]
            if not rows:
                break
            form, button, label = rows[0]
            done.add(label)
            yield form, button, f"{urlsplit(url).path}: {label}"
            # Opened afresh before the next form, even after a redirect back to it: an
            # element of a page Chromium was still replacing cannot be clicked ("node does
            # not belong to the document", seen in a CI run).
            browser.open(url)


def first_button(browser: Any, form: Any) -> Any:
    for row_form, button, _label in browser.submissions():
        if row_form == form:
            return button
    raise AssertionError(f"the form {form} has no submit button")


def submit_form(
    browser: Any,
    path: str,
    selector: str,
    typed: dict[str, Any] | None = None,
    forced: dict[str, str] | None = None,
) -> Any:
    """Open ``path``, fill the form ``selector`` in, submit it with its first button."""
    browser.open(path)
    form = browser.driver.find_element("css selector", selector)
    fill(browser, form, typed or {})
    for name, value in (forced or {}).items():
        browser.force(form, name, value)
    return browser.submit(first_button(browser, form))


def test_every_page_answers_with_the_viewport_and_no_internals(browser: Any) -> None:
    pages = crawl(browser)
    assert len(pages) < MAX_PAGES, f"the walk stopped at {MAX_PAGES} pages: raise MAX_PAGES"
    for link in capability_pages(browser):
        assert link in pages, f"the home page's link {link} was not walked"
    bad = [page for page in pages.values() if page.status != 200]
    assert not bad, f"pages that did not answer 200: {bad}"
    assert len(pages) > len(capability_pages(browser)), "no page links further"


def test_every_form_submits_with_the_values_it_shows(browser: Any) -> None:
    """Each form (each submit button) of each page, filled in as a visitor would."""
    problems = []
    submitted = 0
    for form, button, where in walk_forms(browser):
        try:
            fill_empty_fields(browser, form, where)
            page = browser.submit(button)
            submitted += 1
            if not 200 <= page.status < 300:
                problems.append(f"{where} ended on {page!r}")
            elif errors := browser.error_messages(outside="#messages"):
                problems.append(f"{where} ended on {page!r} showing {errors}")
        except AssertionError as exc:
            problems.append(f"{where}: {exc}")
    assert submitted >= 10, f"only {submitted} form submissions: did the walk find the forms?"
    assert not problems, "forms that failed with the values they show:\n" + "\n".join(problems)


def _create_rows(browser: Any) -> None:
    """A task and a safe entry, so the per-row forms (next status, delete) are on the pages."""
    assert submit_form(browser, "/models", ADD_TASK, {"title": "csrf check"}).status == 200
    safe_set = "form[action$='/safe/set']"
    assert submit_form(browser, "/safe", safe_set, {"key": "k", "value": "v"}).status == 200


def test_a_post_without_its_csrf_token_is_refused_with_a_readable_page(browser: Any) -> None:
    """Every POST form, its hidden csrf_token removed in the page, is refused."""
    _create_rows(browser)
    problems = []
    refused = 0
    for form, button, where in walk_forms(browser, "post"):
        try:
            removed = browser.driver.execute_script(
                "const inputs = arguments[0].querySelectorAll('input[name=csrf_token]');"
                "inputs.forEach(i => i.remove()); return inputs.length;",
                form,
            )
            fill_empty_fields(browser, form, where)
            page = browser.submit(button)
            if page.status < 400:
                problems.append(
                    f"{where} was accepted without a CSRF token ({page!r}; the form had "
                    f"{removed} csrf_token input)"
                )
                continue
            refused += 1
            message = browser.check_readable_error(page, where)
            if "csrf" not in message.lower() and "token" not in message.lower():
                problems.append(f"{where}: the refusal does not say why: {message!r}")
        except AssertionError as exc:
            problems.append(f"{where}: {exc}")
    assert refused + len(problems) >= 10, "did the walk find the POST forms?"
    assert not problems, "POST forms without their CSRF token:\n" + "\n".join(problems)


def counter(browser: Any) -> int:
    browser.open("/sessions")
    return int(browser.driver.find_element("id", "counter").text)


def test_a_post_refused_for_its_csrf_token_changes_nothing(browser: Any) -> None:
    before = counter(browser)
    browser.open("/sessions")
    form = browser.driver.find_element("css selector", "form[action$='/sessions/increment']")
    browser.driver.execute_script(
        "arguments[0].querySelector('input[name=csrf_token]').remove()", form
    )
    page = browser.submit(first_button(browser, form))
    browser.check_readable_error(page, "increment without its token")
    assert counter(browser) == before
    # and with its token, the same form counts (so the check above can fail)
    submit_form(browser, "/sessions", "form[action$='/sessions/increment']")
    assert counter(browser) == before + 1


def messages(browser: Any) -> list[str]:
    return [el.text for el in browser.driver.find_elements("css selector", "#messages .msg")]


def test_a_flash_message_shows_once_and_escaped(browser: Any) -> None:
    text = f"Browser check <b>{uuid.uuid4().hex[:8]}</b>"
    page = submit_form(browser, "/sessions", "form[action$='/sessions/flash']", {"text": text})
    assert page.status == 200 and urlsplit(page.url).path == "/sessions"
    assert messages(browser) == [text], "the message is not shown (as text) after the redirect"
    assert not browser.driver.find_elements("css selector", "#messages b")
    page = browser.reload()
    assert page.status == 200
    assert messages(browser) == [], "the message is shown again on reload"


def test_a_retried_conflict_counts_and_flashes_once(browser: Any) -> None:
    before = counter(browser)
    page = submit_form(browser, "/sessions", "form[action$='/sessions/conflict']")
    assert page.status == 200, f"the conflict form ended on {page!r}"
    assert len(messages(browser)) == 1, f"messages after the retry: {messages(browser)}"
    assert int(browser.driver.find_element("id", "counter").text) == before + 1
    browser.reload()
    assert messages(browser) == []


BAD_INPUT = [
    pytest.param(
        "/models", ADD_TASK, {"title": "t"}, {"priority": "ten"}, id="models-priority-ten"
    ),
    pytest.param(
        "/models", ADD_TASK, {"title": "t"}, {"priority": HUGE_NUMBER}, id="models-priority-huge"
    ),
    pytest.param(
        "/models", "form[method=get]", {}, {"min_priority": HUGE_NUMBER}, id="models-filter-huge"
    ),
    pytest.param("/cache/1", "form[method=post]", {}, {"price": "ten"}, id="cache-price-ten"),
    pytest.param(
        "/cache/1", "form[method=post]", {}, {"price": HUGE_NUMBER}, id="cache-price-huge"
    ),
    pytest.param(
        "/cache/1", "form[method=post]", {}, {"price": "9" * 20}, id="cache-price-overflow"
    ),
    pytest.param("/store", STORE_SET, {}, {"value": DEEP_JSON}, id="store-value-deep"),
    pytest.param("/store", STORE_SET, {}, {"value": HUGE_NUMBER}, id="store-value-huge-number"),
    pytest.param("/store", STORE_SET, {}, {"expire": "ten"}, id="store-expire-ten"),
    pytest.param("/store", STORE_SET, {}, {"expire": "1e400"}, id="store-expire-huge"),
    pytest.param(
        "/safe",
        "form[action$='/safe/set']",
        {"key": "deep", "json": True},
        {"value": DEEP_JSON},
        id="safe-json-deep",
    ),
    pytest.param(
        "/safe",
        "form[action$='/safe/set']",
        {"key": "big", "json": True},
        {"value": HUGE_NUMBER},
        id="safe-json-huge-number",
    ),
    pytest.param(
        "/safe",
        "form[action$='/safe/update']",
        {},
        {"lines": f"deep = {DEEP_JSON}"},
        id="safe-update-deep",
    ),
    pytest.param(
        "/sessions",
        "form[action$='/sessions/flash']",
        {},
        {"kind": "shout"},
        id="sessions-unknown-kind",
    ),
    pytest.param(
        "/sessions",
        "form[action$='/sessions/flash']",
        {},
        {"text": "x" * 100_000},
        id="sessions-huge-text",
    ),
]


@pytest.mark.parametrize(("path", "selector", "typed", "forced"), BAD_INPUT)
def test_bad_input_answers_a_readable_4xx_page(
    browser: Any, path: str, selector: str, typed: dict[str, Any], forced: dict[str, str]
) -> None:
    page = submit_form(browser, path, selector, typed, forced)
    message = browser.check_readable_error(page, f"{path} with {list(forced)} forced")
    assert len(message) >= 10, f"the error message {message!r} says too little"
