"""Every example in ``docs/`` and ``README.rst`` runs, so an example cannot drift.

The convention, also summed up on the docs' install page:

``.. code-block:: python``
    Executed. The blocks of one page run in order in one namespace, like a doctest
    session: a later block may use what an earlier one defined.
``.. code-block:: ini``
    Parsed as PasteDeploy parses an app section (``pyramid.paster.get_appsettings``, through
    plaster; ``[app:main]`` is added when the block has no section header). Its
    ``transient.*`` keys go through :func:`pyramid_transient.settings.parse_settings` and
    its ``redis.sessions.*`` keys through
    :func:`pyramid_transient.sessions.parse_session_settings`, so a misspelt key or a bad
    value fails; every name in ``pyramid.includes`` must import; a value holding an inline
    ``;`` or ``#`` comment is refused (PasteDeploy keeps it as part of the value).
``.. code-block:: html+jinja`` (or ``jinja``)
    Rendered by Jinja2 with autoescaping and ``StrictUndefined``, in the page's namespace
    (so an undefined name fails), with the globals and the ``{% cache %}`` tag that
    :mod:`pyramid_transient.jinja2` registers on pyramid_jinja2's environments; the
    result is left in the namespace as ``rendered``.
``.. code-block:: console`` (or ``bash``), and bare ``::`` literal blocks
    Not executed. Their ``ptransient`` command lines must parse with the real argument
    parser (``[--option]`` means the option is optional), and ``pip install`` lines must
    name extras that ``pyproject.toml`` defines and constraint files that exist. A bare
    ``::`` block is for text and shell lines only: one that holds Python statements or
    ``transient.*`` settings is refused (give it a ``code-block`` with its language).
``.. test:`` (an rst comment, so Sphinx renders nothing)
    Its indented body is Python, executed in order with the page's blocks: the
    assertions that make an example prove something, or a line of setup a fragment needs.
``.. no-run: <reason>`` (an rst comment) right before a ``code-block``
    That block is not executed. The list of such blocks is :data:`NO_RUN`, kept tiny.

Fixture namespace of every page (built from the page's ini blocks, merged in order, with
the server keys replaced by the suite's redis-server, a fresh key prefix and the
databases of ``test.ini``):

``config``, ``registry``, ``manager``
    The Configurator of a real app (``pyramid.includes`` of the page, else
    ``pyramid_transient``; a page without ini also gets a session secret), its registry and its
    :class:`RedisManager`.
``app``
    A ``webtest.TestApp`` of that app, on HTTPS. Route ``home`` (``/``) reads one Redis key.
``call(view, *args, **attrs)``
    Runs ``view(request, *args)`` inside a real request through ``app`` (its tweens:
    pyramid_tm when included, sessions), after setting ``attrs`` on the request
    (``matchdict={"id": "1"}``); returns what the view returned. Cookies persist across
    calls, so one session spans them.
``request``
    A request from ``pyramid.scripting.prepare`` on the registry (current while the
    page runs), for code that runs outside a view.
``celery_app``
    A stand-in with a ``conf`` attribute (Celery is not a dependency).
``__name__``
    ``"myapp.views"``: the namespace is that module's, registered in ``sys.modules``.

and the module ``myapp.models`` (importable, named by ini examples): ``DBSession`` (a
``sessionmaker`` on a real SQLite file), ``Base``, ``User``, ``Article``, ``Comment``, with
user 1 ("Ann"), her article 1 ("Hello") and its comment 1 seeded. ``request.dbsession`` is
a session of it, joined to ``request.tm`` when pyramid_tm is included. The current
directory holds ``production.ini``: the app's settings in an ``[app:main]`` section.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
import textwrap
import tomllib
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import pytest
import redis
import webtest
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.paster import get_appsettings
from pyramid.response import Response
from pyramid.scripting import prepare
from pyramid.settings import aslist
from sqlalchemy import ForeignKey, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.orm import sessionmaker as make_sessionmaker

from pyramid_transient.connection import get_manager
from pyramid_transient.jinja2 import add_to_environment
from pyramid_transient.scripts.ptransient import build_parser
from pyramid_transient.sessions import parse_session_settings
from pyramid_transient.settings import parse_settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    str(p.relative_to(ROOT)) for p in [ROOT / "README.rst", *(ROOT / "docs").rglob("*.rst")]
)
PAGES = [p for p in PAGES if not p.startswith("docs/_build")]

#: Blocks deliberately not executed, as (page, first line of the block): keep it tiny.
NO_RUN: set[tuple[str, int]] = set()

RUN_LANGS = {"python", "ini", "html+jinja", "jinja"}
TEXT_LANGS = {"console", "bash", "text"}

# ---------------------------------------------------------------------- parsing


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the block's first line of code
    lang: str  # a code-block language; "test" for a hidden test; "" for a bare literal
    code: str
    no_run: str | None = None


_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. code-block::\s*(?P<lang>\S+)\s*$")
_TEST = re.compile(r"^(?P<indent>\s*)\.\. test:\s*$")
_NO_RUN = re.compile(r"^\s*\.\. no-run:\s*(?P<reason>\S.*)$")
_OPTION = re.compile(r"^\s+:[\w-]+:")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _body(lines: list[str], start: int, base: int) -> tuple[int, str, int]:
    """The indented body after ``start``: (first line index, dedented text, next index)."""
    i = start
    while i < len(lines) and (not lines[i].strip() or _OPTION.match(lines[i])):
        if _OPTION.match(lines[i]) and _indent(lines[i]) <= base:
            break
        i += 1
    first = i
    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
        i += 1
    end = i
    while end > first and not lines[end - 1].strip():
        end -= 1
    return first, textwrap.dedent("\n".join(lines[first:end])), i


def parse_blocks(text: str, page: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    reason: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _NO_RUN.match(line):
            reason = m["reason"].strip()
            i += 1
            continue
        if m := _DIRECTIVE.match(line):
            first, code, i = _body(lines, i + 1, len(m["indent"]))
            blocks.append(Block(page, first + 1, m["lang"], code, reason))
            reason = None
            continue
        if m := _TEST.match(line):
            first, code, i = _body(lines, i + 1, len(m["indent"]))
            blocks.append(Block(page, first + 1, "test", code))
            continue
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            first, code, nxt = _body(lines, i + 1, _indent(line))
            if code.strip():
                blocks.append(Block(page, first + 1, "", code))
                i = nxt
                continue
        if line.strip() and reason is not None and not line.lstrip().startswith(".."):
            raise AssertionError(f"{page}:{i + 1}: '.. no-run:' must come right before a block")
        i += 1
    return blocks


def page_blocks(page: str) -> list[Block]:
    return parse_blocks((ROOT / page).read_text(), page)


# ---------------------------------------------------------------------- checks


class ExampleFailed(AssertionError):
    """A documentation example that does not run as written."""


_INLINE_COMMENT = re.compile(r"\s[;#]")
_SERVER_KEY = re.compile(
    r"^transient\.(url|key_prefix|db\..+|sentinel\..+|cluster\..+|username|password|ssl\..+)$"
)


def load_ini(code: str, directory: Path) -> dict[str, Any]:
    """The app settings of an ini example, as Pyramid's ``get_appsettings`` reads them."""
    if not re.search(r"^\s*\[", code, re.M):
        code = "[app:main]\nuse = egg:pyramid-transient#demo\n\n" + code
    path = directory / "example.ini"
    path.write_text(code)
    settings = dict(get_appsettings(str(path)))
    for key, value in settings.items():
        if isinstance(value, str) and _INLINE_COMMENT.search(value):
            raise ExampleFailed(
                f"{key} = {value!r}: PasteDeploy keeps an inline ';' or '#' comment as part "
                "of the value; put the comment on a line of its own"
            )
    parse_settings(settings)
    includes = aslist(settings.get("pyramid.includes", ""))
    sessions = {"pyramid_transient", "pyramid_transient.sessions"}
    if sessions & set(includes) or any(k.startswith("redis.sessions.") for k in settings):
        parse_session_settings(settings)  # the secret is required once sessions are included
    for name in includes:
        importlib.import_module(name)
    return settings


def check_shell(code: str) -> int:
    """Check the ``ptransient`` and ``pip install`` lines of a shell block; count them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    parser = build_parser()
    checked = 0
    for raw in code.splitlines():
        line = raw.strip().removeprefix("$ ")
        for command in re.split(r"\s*&&\s*", line):
            words = shlex.split(command) if command else []
            if words and words[0] == "ptransient":
                args = [w[1:-1] if w.startswith("[") and w.endswith("]") else w for w in words]
                try:
                    parser.parse_args(args[1:])
                except SystemExit:
                    raise ExampleFailed(f"ptransient refuses {command!r}") from None
                checked += 1
            if any(Path(w).name in ("pip", "pip3") for w in words) and "install" in words:
                for i, word in enumerate(words):
                    if word in ("-c", "--constraint") and not (ROOT / words[i + 1]).is_file():
                        raise ExampleFailed(f"{command!r}: no constraints file {words[i + 1]}")
                    if m := re.fullmatch(r"[\w.\-]*\[([\w,\-]+)\]", word):
                        unknown = set(m[1].split(",")) - extras
                        if unknown:
                            raise ExampleFailed(f"{command!r}: no extra {sorted(unknown)}")
                checked += 1
    return checked


def check_bare_literal(code: str) -> None:
    """A bare ``::`` block must hold neither Python statements nor settings."""
    if re.search(r"^\s*(transient|redis\.sessions|pyramid)\.[\w.]+\s*=", code, re.M):
        raise ExampleFailed("settings in a bare '::' block: use '.. code-block:: ini'")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return
    code_nodes = (ast.Import, ast.ImportFrom, ast.Assign, ast.FunctionDef, ast.ClassDef, ast.Call)
    if any(isinstance(node, code_nodes) for node in ast.walk(tree)):
        raise ExampleFailed(
            "Python (or a template) in a bare '::' block: give it a code-block with its "
            "language (python, html+jinja) so that it is run"
        )


# ---------------------------------------------------------------------- myapp.models


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Article(Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship()
    comments: Mapped[list[Comment]] = relationship(back_populates="article")


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"))
    text: Mapped[str] = mapped_column(String(500))
    article: Mapped[Article] = relationship(back_populates="comments")


def install_myapp(directory: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A fresh ``myapp.models`` (its own sessionmaker and SQLite file) in ``sys.modules``."""
    engine = create_engine(f"sqlite:///{directory / 'myapp.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        ann = User(id=1, name="Ann")
        article = Article(id=1, title="Hello", author=ann)
        session.add_all([ann, article, Comment(id=1, article=article, text="First!")])
        session.commit()
    models = types.ModuleType("myapp.models")
    models.__dict__.update(
        Base=Base,
        User=User,
        Article=Article,
        Comment=Comment,
        DBSession=make_sessionmaker(bind=engine),
        engine=engine,
    )
    views = types.ModuleType("myapp.views")  # the module a page's examples run in
    package = types.ModuleType("myapp")
    package.__path__ = []
    package.models = models  # type: ignore[attr-defined]
    package.views = views  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myapp", package)
    monkeypatch.setitem(sys.modules, "myapp.models", models)
    monkeypatch.setitem(sys.modules, "myapp.views", views)
    return models


# ---------------------------------------------------------------------- the page's app


class PageApp:
    """The fixture namespace a page's examples run in."""

    def __init__(self, settings: dict[str, Any], models: types.ModuleType) -> None:
        self.settings = settings
        self.models = models
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self.results: dict[int, Any] = {}
        self.config = Configurator(settings=settings)
        self.config.include(self._glue)
        self.wsgi = self.config.make_wsgi_app()
        # HTTPS, as behind a production proxy: Secure cookies come back.
        self.testapp = webtest.TestApp(self.wsgi, extra_environ={"wsgi.url_scheme": "https"})
        self.env = prepare(registry=self.config.registry)

    def _glue(self, config: Configurator) -> None:
        models = self.models

        def dbsession(request: Any) -> Session:
            session = models.DBSession()
            if request.environ.get("tm.active"):
                zope.sqlalchemy.register(session, transaction_manager=request.tm)
            else:
                request.add_finished_callback(lambda r: session.close())
            return session

        def home(request: Any) -> Response:
            request.redis.get("home")
            return Response("home")

        def dispatch(request: Any) -> Any:
            n = int(request.matchdict["n"])
            view, args, attrs = self.calls[n]
            for name, value in attrs.items():
                setattr(request, name, value)
            result = self.results[n] = view(request, *args)
            return result if isinstance(result, Response) else Response("ok")

        config.add_request_method(dbsession, "dbsession", reify=True)
        config.add_route("home", "/")
        config.add_view(home, route_name="home")
        config.add_route("_docs", "/_docs/{n}")
        config.add_view(dispatch, route_name="_docs")

    def call(self, view: Callable[..., Any], *args: Any, **attrs: Any) -> Any:
        n = len(self.calls)
        self.calls.append((view, args, attrs))
        self.testapp.get(f"/_docs/{n}")
        return self.results.pop(n)

    def namespace(self) -> dict[str, Any]:
        registry = self.config.registry
        namespace = sys.modules["myapp.views"].__dict__
        namespace.update(
            {
                "config": self.config,
                "registry": registry,
                "manager": get_manager(registry),
                "app": self.testapp,
                "call": self.call,
                "request": self.env["request"],
                "celery_app": SimpleNamespace(conf=SimpleNamespace()),
            }
        )
        return namespace

    def close(self) -> None:
        self.env["closer"]()
        get_manager(self.config.registry).close()
        self.models.engine.dispose()


@pytest.fixture
def no_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """An example that names localhost:6379 must never reach the server there."""
    connect = redis.connection.Connection._connect

    def guarded(self: Any) -> Any:
        if self.port == 6379:
            raise AssertionError("a docs example tried to connect to port 6379")
        return connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", guarded)


@pytest.fixture
def run_page(
    transient_manager: Any,  # flushes the test databases
    transient_settings: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_default_port: None,
) -> Iterator[Callable[[list[Block]], dict[str, int]]]:
    monkeypatch.chdir(tmp_path)
    apps: list[PageApp] = []

    def run(blocks: list[Block]) -> dict[str, int]:
        counts = {"python": 0, "ini": 0, "jinja": 0, "test": 0, "shell": 0, "no-run": 0}
        page_settings: dict[str, Any] = {}
        for block in blocks:
            if block.lang == "ini" and block.no_run is None:
                page_settings.update(_run(block, load_ini, tmp_path))
                counts["ini"] += 1
        namespace: dict[str, Any] | None = None
        for block in blocks:
            if block.no_run is not None:
                counts["no-run"] += 1
                continue
            if block.lang in ("python", "test", "html+jinja", "jinja") and namespace is None:
                namespace = _start(page_settings, transient_settings, tmp_path, monkeypatch)
                apps.append(namespace["_page_app"])
            if block.lang in ("python", "test"):
                _run(block, _exec, namespace, block)
                counts["python" if block.lang == "python" else "test"] += 1
            elif block.lang in ("html+jinja", "jinja"):
                _run(block, _render, namespace)
                counts["jinja"] += 1
            elif block.lang in TEXT_LANGS or block.lang == "":
                if block.lang == "":
                    _run(block, check_bare_literal)
                counts["shell"] += _run(block, check_shell)
            elif block.lang != "ini":
                raise ExampleFailed(
                    f"{block.page}:{block.line}: no rule runs or checks "
                    f"'.. code-block:: {block.lang}' (see tests/test_docs_examples.py)"
                )
        return counts

    yield run
    for page_app in apps:
        page_app.close()


def _start(
    page_settings: dict[str, Any],
    transient_settings: dict[str, Any],
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    settings = {k: v for k, v in page_settings.items() if not _SERVER_KEY.match(k)}
    settings.update(transient_settings)
    settings.setdefault("pyramid.includes", "pyramid_transient")
    if not page_settings:  # a page without ini: the smallest complete app
        settings["redis.sessions.secret"] = "docs-examples-secret"
    settings.pop("here", None)
    settings.pop("__file__", None)
    ini = "\n".join(f"{k} = {v}" for k, v in settings.items())
    (directory / "production.ini").write_text(
        f"[app:main]\nuse = egg:pyramid-transient#demo\n{ini}\n"
    )
    page_app = PageApp(settings, install_myapp(directory, monkeypatch))
    namespace = page_app.namespace()
    namespace["_page_app"] = page_app
    return namespace


def _run(block: Block, action: Callable[..., Any], *args: Any) -> Any:
    try:
        return action(block.code, *args)
    except ExampleFailed as exc:
        raise ExampleFailed(f"{block.page}:{block.line}: {exc}") from None
    except Exception as exc:
        line = block.line
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == str(ROOT / block.page):
                line = lineno  # the innermost line of the page that failed
        raise ExampleFailed(
            f"{block.page}:{line}: the {block.lang or 'literal'} block fails: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _exec(code: str, namespace: dict[str, Any], block: Block) -> None:
    # Padded so that a traceback names the line of the .rst file.
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, str(ROOT / block.page), "exec"), namespace)


def _render(code: str, namespace: dict[str, Any]) -> None:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    add_to_environment(env)  # the globals pyramid_transient gives pyramid_jinja2's env
    context = {k: v for k, v in namespace.items() if not k.startswith("_")}
    namespace["rendered"] = env.from_string(code).render(context)


# ---------------------------------------------------------------------- the tests


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page: str, run_page: Callable[[list[Block]], dict[str, int]]) -> None:
    blocks = page_blocks(page)
    counts = run_page(blocks)
    assert not blocks or sum(counts.values()) > 0, counts


def test_no_run_blocks_are_the_listed_few() -> None:
    found = {(b.page, b.line) for p in PAGES for b in page_blocks(p) if b.no_run is not None}
    assert found == NO_RUN


def test_every_code_block_has_a_rule() -> None:
    langs = {(b.page, b.line, b.lang) for p in PAGES for b in page_blocks(p)}
    unknown = {x for x in langs if x[2] not in RUN_LANGS | TEXT_LANGS | {"test", ""}}
    assert not unknown


def test_the_docs_have_examples_to_run() -> None:
    runnable = [b for p in PAGES for b in page_blocks(p) if b.lang in RUN_LANGS]
    assert len(runnable) >= 25, "the parser finds too few blocks: is it broken?"


# The runner itself must be able to fail: each of these pages is broken on purpose.

BROKEN = {
    "python": """
.. code-block:: python

   x = undefined_name
""",
    "earlier block": """
.. code-block:: python

   x = 1

.. test:

   assert x == 2
""",
    "inline comment": """
.. code-block:: ini

   transient.db.store = 2     ; optional
""",
    "inline comment in a string": """
.. code-block:: ini

   redis.sessions.secret = change-me   ; a comment
""",
    "unknown key": """
.. code-block:: ini

   transient.key_prefixx = myapp
""",
    "bad include": """
.. code-block:: ini

   pyramid.includes = pyramid_transient ; or pyramid_transient.store
""",
    "template": """
.. code-block:: html+jinja

   {{ render_flashes(pop_flashes(request)) }}
""",
    "bare python": """
Like this::

   safe = get_safe("billing", manager)
""",
    "bare template": """
And in a template::

   {{ render_messages(pop_messages(request)) }}
""",
    "ptransient": """
.. code-block:: console

   $ ptransient production.ini frobnicate
""",
    "extra": """
.. code-block:: console

   $ pip install -c ci/constraints.txt -e '.[nosuchextra]'
""",
    "unknown language": """
.. code-block:: yaml

   a: 1
""",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_example_fails(
    case: str, run_page: Callable[[list[Block]], dict[str, int]]
) -> None:
    blocks = parse_blocks(BROKEN[case], "broken.rst")
    assert blocks
    with pytest.raises(ExampleFailed, match=r"broken\.rst:\d+"):
        run_page(blocks)


def test_no_run_is_honoured(run_page: Callable[[list[Block]], dict[str, int]]) -> None:
    page = """
.. no-run: a fragment

.. code-block:: python

   x = undefined_name
"""
    assert run_page(parse_blocks(page, "fragment.rst"))["no-run"] == 1


def test_block_lines_point_into_the_page() -> None:
    blocks = parse_blocks(BROKEN["earlier block"], "broken.rst")
    assert [(b.lang, b.line, b.code) for b in blocks] == [
        ("python", 4, "x = 1"),
        ("test", 8, "assert x == 2"),
    ]


def _counts() -> dict[str, dict[str, int]]:  # pragma: no cover - for the report only
    table: dict[str, dict[str, int]] = {}
    for page in PAGES:
        kinds: dict[str, int] = {}
        for block in page_blocks(page):
            kind = "no-run" if block.no_run else block.lang or "literal"
            kinds[kind] = kinds.get(kind, 0) + 1
        table[page] = kinds
    return table


if __name__ == "__main__":  # pragma: no cover
    for page, kinds in _counts().items():
        print(page, kinds)
