"""Browser tests: the demo app of ``development.ini`` driven by headless Chromium.

They are collected only when the command line names ``tests/browser`` (or a file in it):
``tox -e browser``, ``pytest tests/browser`` or ``ci/browser``. The plain ``pytest`` of the
README (``testpaths = tests``) and ``pytest tests`` leave them out, so the default run
needs no browser. Named but not runnable (no selenium, no Chromium, no chromedriver), the
run stops with one usage error: it never passes without having run.

The app is built the way ``pserve development.ini`` builds it, overriding only
``transient.url`` (the suite's redis-server), ``transient.key_prefix`` (fresh) and
``sqlalchemy.url`` (a temporary SQLite file), and served by waitress on a free loopback
port in a thread. Chromium is Debian's ``/usr/bin/chromium`` (else ``chromium`` on PATH,
else ``$CHROMIUM``) driven by ``/usr/bin/chromedriver`` (else PATH, else
``$CHROMEDRIVER``), given explicitly so Selenium Manager never downloads anything, with a
fresh profile and every background fetch switched off.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

HERE = Path(__file__).resolve().parent
DEVELOPMENT_INI = HERE.parent.parent / "development.ini"


# ---------------------------------------------------------------------- collection


def _named_on_command_line(config: pytest.Config) -> bool:
    """Whether an argument of this run is this directory or something inside it."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not _named_on_command_line(config) and HERE in collection_path.resolve().parents:
        return True
    return None


def chromium_path() -> str | None:
    return _executable("CHROMIUM", "/usr/bin/chromium", "chromium")


def chromedriver_path() -> str | None:
    return _executable("CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")


def _executable(variable: str, default: str, name: str) -> str | None:
    for candidate in (os.environ.get(variable), default, shutil.which(name)):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def why_not_runnable() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[testing,browser]', or tox -e browser)"
    if chromium_path() is None:
        return "no Chromium (looked for $CHROMIUM, /usr/bin/chromium, chromium on PATH)"
    if chromedriver_path() is None:
        return (
            "no chromedriver (looked for $CHROMEDRIVER, /usr/bin/chromedriver, "
            "chromedriver on PATH)"
        )
    return None


def pytest_configure(config: pytest.Config) -> None:
    if _named_on_command_line(config):
        problem = why_not_runnable()
        if problem is not None:
            raise pytest.UsageError(f"browser tests were NOT run: {problem}")


# ---------------------------------------------------------------------- the demo server


class DemoServer:
    """The demo app served by waitress on a free loopback port, in a thread."""

    def __init__(self, app: Any, settings: dict[str, str]) -> None:
        from waitress.server import create_server

        self.app = app
        self.settings = settings
        self.server = create_server(app, host="127.0.0.1", port=0, threads=4)
        self.url = f"http://127.0.0.1:{self.server.effective_port}/"
        self.thread = threading.Thread(target=self.server.run, name="demo-waitress", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        server = self.server

        def close_all() -> None:  # runs in the server's own loop thread
            for channel in list(server._map.values()):
                if channel is not server.trigger and channel is not server:
                    channel.close()
            server.close()  # the listening socket and the trigger: the loop's map empties

        server.trigger.pull_trigger(close_all)
        self.thread.join(10)
        server.task_dispatcher.shutdown()
        if self.thread.is_alive():
            raise RuntimeError("the demo's waitress thread did not stop")


def load_demo(overrides: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """``development.ini``'s app, its settings with ``overrides`` in place of the ini's."""
    from paste.deploy.loadwsgi import APP, loadcontext
    from pyramid.paster import get_appsettings

    settings = dict(get_appsettings(str(DEVELOPMENT_INI)))
    unknown = set(overrides) - set(settings)
    if unknown:
        raise ValueError(f"development.ini has no {sorted(unknown)}: override only its keys")
    settings.update(overrides)
    # The ini's own `use =` factory, called as pserve calls it.
    context = loadcontext(APP, f"config:{DEVELOPMENT_INI}")
    return context.object(context.global_conf, **settings), settings


@pytest.fixture(scope="session")
def demo(transient_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from pyramid_transient.connection import get_manager

    prefix = f"browser{uuid.uuid4().hex[:8]}"
    database = tmp_path_factory.mktemp("demo") / "demo.db"
    app, settings = load_demo(
        {
            "transient.url": transient_redis_url,
            "transient.key_prefix": prefix,
            "sqlalchemy.url": f"sqlite:///{database}",
        }
    )
    server = DemoServer(app, settings)
    try:
        yield server
    finally:
        server.stop()
        manager = get_manager(app.registry)
        try:
            _delete_keys(manager, prefix)
        finally:
            manager.close()


def _delete_keys(manager: Any, prefix: str) -> None:
    """Remove what the run wrote (only our fresh prefix; a shared server keeps the rest)."""
    if manager.mode != "standalone":
        return
    for name in manager.names:
        client = manager.get(name)
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)


# ---------------------------------------------------------------------- the browser


class Page:
    """What the browser shows after a navigation: the document's HTTP status and type."""

    def __init__(self, status: int, mime: str, url: str) -> None:
        self.status = status
        self.mime = mime
        self.url = url

    def __repr__(self) -> str:
        return f"<{self.status} {self.mime} {self.url}>"


class Browser:
    """A headless Chromium on the demo, with helpers that check every page they reach.

    Every navigation (``open``, ``submit``, ``reload``) returns the :class:`Page` the
    browser ended on, read from Chromium's network log, and checks that the page shows no
    internals (:meth:`check_no_internals`); HTML pages must carry the viewport meta.
    """

    def __init__(self, driver: Any, demo: DemoServer, forbidden: dict[str, str]) -> None:
        self.driver = driver
        self.demo = demo
        self.forbidden = forbidden
        self.visited: list[Page] = []
        #: The HTML pages reachable from the home page, once a walk has found them.
        self.pages: list[str] = []

    # navigation

    def url(self, path: str) -> str:
        return urljoin(self.demo.url, path)

    def open(self, path_or_url: str) -> Page:
        self._drain()
        self.driver.get(self.url(path_or_url))
        return self._landed()

    def reload(self) -> Page:
        self._drain()
        self.driver.refresh()
        return self._landed()

    def submit(self, button: Any) -> Page:
        """Click ``button`` (a form's submit button) and wait for the next page."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.wait import WebDriverWait

        self._drain()
        old = self.driver.find_element("tag name", "html")
        button.click()

        def replaced(driver: Any) -> bool:
            # selenium's staleness_of, also for the error Chromium answers when the old
            # page is half torn down ("Node with given id does not belong to the
            # document"), which is a WebDriverException, not a StaleElementReference.
            try:
                old.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(self.driver, 20).until(replaced)
        return self._landed()

    def _drain(self) -> None:
        self.driver.get_log("performance")

    def _landed(self) -> Page:
        from selenium.webdriver.support.wait import WebDriverWait

        WebDriverWait(self.driver, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        page = None
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") != "Network.responseReceived":
                continue
            params = message["params"]
            if params.get("type") == "Document":
                response = params["response"]
                page = Page(int(response["status"]), response.get("mimeType", ""), response["url"])
        if page is None:
            raise AssertionError(f"no document response seen for {self.driver.current_url}")
        self.visited.append(page)
        self.check_no_internals(page)
        if page.mime == "text/html":
            self.check_viewport(page)
        return page

    # checks on every page

    def check_no_internals(self, page: Page) -> None:
        source = self.driver.page_source
        for what, text in self.forbidden.items():
            assert text not in source, f"{page!r} shows {what} ({text!r})"

    def check_viewport(self, page: Page) -> None:
        contents = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('meta[name=viewport]'))"
            ".map(m => m.content)"
        )
        assert any("width=device-width" in c for c in contents), (
            f"{page!r} has no <meta name=viewport content='width=device-width, ...'> "
            f"(found {contents!r})"
        )

    def check_readable_error(self, page: Page, what: str) -> str:
        """A 4xx HTML page of the demo's layout with a message: returns the message."""
        assert 400 <= page.status < 500, f"{what}: answered {page!r}, not a 4xx page"
        assert page.mime == "text/html", f"{what}: answered {page!r}, not an HTML page"
        messages = self.error_messages()
        assert messages, f"{what}: {page!r} shows no error message (.msg-error or role=alert)"
        return messages[0]

    def error_messages(self, outside: str = "") -> list[str]:
        """The texts of the error messages shown (not inside ``outside``, a selector)."""
        scope = f":not({outside} *)" if outside else ""
        found = self.driver.find_elements(
            "css selector", f".msg-error{scope}, [role=alert]{scope}"
        )
        return [el.text.strip() for el in found if el.is_displayed() and el.text.strip()]

    # pages and forms

    def same_origin_links(self) -> list[str]:
        hrefs = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
        )
        origin = urlsplit(self.demo.url)[:2]
        return [h.split("#", 1)[0] for h in hrefs if urlsplit(h)[:2] == origin]

    def text(self) -> str:
        return str(self.driver.find_element("tag name", "body").text)

    def submissions(self, method: str = "") -> list[tuple[Any, Any, str]]:
        """(form, submit button, label) for each submit button of each form on the page
        (only the forms of ``method``, if given), in the order of the page."""
        return [tuple(row) for row in self.driver.execute_script(_SUBMISSIONS_JS, method)]

    def empty_fields(self, form: Any) -> list[tuple[Any, str, bool]]:
        """(field, name, required) for each visible text field of ``form`` left empty."""
        return [tuple(row) for row in self.driver.execute_script(_EMPTY_FIELDS_JS, form)]

    def force(self, form: Any, name: str, value: str) -> None:
        """Put ``value`` in the field ``name`` as a hostile client would: past the
        browser's own checks (type, maxlength, pattern, required, a select's options)."""
        field = form.find_element("css selector", f"[name='{name}']")
        self.driver.execute_script(
            """
            const [form, field, value] = arguments;
            form.noValidate = true;
            if (field.tagName === 'SELECT') {
                const option = document.createElement('option');
                option.value = value; option.textContent = 'forced';
                field.appendChild(option); field.value = value;
            } else {
                for (const a of ['maxlength', 'minlength', 'pattern', 'min', 'max', 'required'])
                    field.removeAttribute(a);
                if (field.type !== 'checkbox' && field.tagName === 'INPUT') field.type = 'text';
                field.value = value;
            }
            """,
            form,
            field,
            value,
        )


# Attributes are read with getAttribute: a form's .action and .id are shadowed by fields
# named "action" or "id".
_SUBMISSIONS_JS = """
const only = arguments[0], rows = [];
for (const form of document.forms) {
    const method = (form.getAttribute('method') || 'get').toLowerCase();
    if (only && method !== only) continue;
    const action = new URL(form.getAttribute('action') || '', location.href).pathname;
    const id = form.getAttribute('id');
    for (const b of form.querySelectorAll('button, input[type=submit], input[type=image]')) {
        if (b.type !== 'submit' && b.type !== 'image') continue;
        const text = (b.textContent.trim() || b.value || '').slice(0, 40);
        rows.push([form, b, `${method.toUpperCase()} ${action}${id ? '#' + id : ''} [${text}]`]);
    }
}
return rows;
"""

_EMPTY_FIELDS_JS = """
const skip = ['hidden', 'checkbox', 'radio', 'submit', 'button', 'image', 'reset'], rows = [];
for (const f of arguments[0].querySelectorAll('input, textarea')) {
    if (skip.includes(f.type) || f.value || !f.getClientRects().length) continue;
    rows.push([f, f.getAttribute('name'), f.required]);
}
return rows;
"""


def _chrome(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path() or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1024,768",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    service = Service(executable_path=chromedriver_path(), log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


def _processes_using(marker: str) -> list[int]:
    """Pids of processes whose command line contains ``marker`` (our profile directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def chromium(demo: DemoServer, transient_redis_url: str) -> Iterator[Browser]:
    """One headless Chromium for the run, quit at its end (also after failures)."""
    profile = tempfile.mkdtemp(prefix="pt-chromium-")
    forbidden = {
        "a traceback": "Traceback (most recent call last)",
        "a Python source path": 'File "/',
        "the session secret": demo.settings["redis.sessions.secret"],
        "a Redis URL": "redis://",
        "the SQLite file": demo.settings["sqlalchemy.url"].removeprefix("sqlite:///"),
    }
    netloc = urlsplit(transient_redis_url).netloc
    if netloc and ":" in netloc:
        forbidden["the Redis server's host:port"] = netloc.rsplit("@", 1)[-1]
    driver = None
    try:
        driver = _chrome(profile)
        yield Browser(driver, demo, forbidden)
    finally:
        if driver is not None:
            driver.quit()
        leaked = _wait_gone(profile)
        shutil.rmtree(profile, ignore_errors=True)
        if leaked:
            pytest.fail(f"Chromium processes {leaked} outlived driver.quit(); killed them")


def _wait_gone(profile: str, timeout: float = 5.0) -> list[int]:
    """Wait for the processes of our Chromium to end; kill (by pid) any still there."""
    deadline = time.monotonic() + timeout
    while (pids := _processes_using(profile)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


@pytest.fixture
def browser(chromium: Browser) -> Browser:
    """The run's Chromium on the demo's home page, with no cookies: a fresh demo session."""
    chromium.driver.get(chromium.url("/"))  # unchecked: the cookies are on this origin
    chromium.driver.delete_all_cookies()
    return chromium
