"""Flash messages with kinds, on top of Pyramid's ``ISession.flash`` queues.

::

    from pyramid_transient.messages import flash, pop_messages

    flash(request, "Saved.", "success")
    flash(request, "Welcome back!", on_commit=True)   # only if the transaction commits
    ...
    for message in pop_messages(request):             # in the next request's template
        ...

Each kind (``info``, ``success``, ``warning``, ``error`` and those added by
``transient.messages.kinds``) is one session flash queue, so
``request.session.pop_flash("error")`` sees the same messages; a message is stored as a
small JSON-safe dict. Plain strings flashed with ``request.session.flash(text, kind)`` (or
into Pyramid's default queue, read as ``info``) come back as :class:`Message` too.

Messages render escaped (``str(message)`` is the text; ``message.__html__()`` the escaped
markup Jinja2 and Chameleon use), unless flashed with ``html=True``.
"""

from __future__ import annotations

import html as _html
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import codec
from .exceptions import InvalidArgument, TransientError, UnknownMessageKind, UnsupportedValue
from .settings import DEFAULT_MESSAGE_KINDS
from .transactions import after_commit

log = logging.getLogger(__name__)

__all__ = [
    "Markup",
    "Message",
    "flash",
    "includeme",
    "message_kinds",
    "peek_messages",
    "pop_messages",
    "render_messages",
]

_QUEUE = "_f_"  # pyramid_session_redis's (and Pyramid's) flash queue key prefix
_DEFAULT_QUEUE = ""  # Pyramid's default queue, read as "info"


class Markup(str):
    """Text that is already safe HTML (``__html__`` returns it unchanged)."""

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Message:
    """One flash message."""

    text: str
    kind: str = "info"
    msg_id: str | None = None
    #: The text is trusted HTML and rendered as is.
    html: bool = False
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __str__(self) -> str:
        return self.text

    def __html__(self) -> str:
        """The text as HTML: escaped unless the message was flashed with ``html=True``."""
        return self.text if self.html else _html.escape(self.text)

    def same_as(self, other: Message) -> bool:
        """Duplicates compare kind, text and msg_id (not ``html`` or ``extra``)."""
        return (self.kind, self.text, self.msg_id) == (other.kind, other.text, other.msg_id)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"t": self.text, "k": self.kind}
        if self.msg_id is not None:
            data["i"] = self.msg_id
        if self.html:
            data["h"] = True
        if self.extra:
            data["x"] = dict(self.extra)
        return data

    @classmethod
    def from_stored(cls, item: Any, kind: str) -> Message | None:
        """A message from what a flash queue holds (ours, or a plain string)."""
        if isinstance(item, str):
            return cls(item, kind)
        if isinstance(item, dict) and isinstance(item.get("t"), str):
            extra = item.get("x")
            return cls(
                item["t"],
                item.get("k", kind) if isinstance(item.get("k"), str) else kind,
                item.get("i") if isinstance(item.get("i"), str) else None,
                item.get("h") is True,
                MappingProxyType(dict(extra)) if isinstance(extra, dict) else MappingProxyType({}),
            )
        log.warning("ignoring a flash message of unexpected shape in queue %r: %r", kind, item)
        return None


def message_kinds(request: Any) -> tuple[str, ...]:
    """The kinds accepted in this app (``transient.messages.kinds``)."""
    from .connection import IRedisManager

    manager = request.registry.queryUtility(IRedisManager)
    return tuple(manager.settings.messages.kinds) if manager is not None else DEFAULT_MESSAGE_KINDS


def _check_kind(request: Any, kind: str) -> None:
    kinds = message_kinds(request)
    if kind not in kinds:
        raise UnknownMessageKind(
            f"flash message kind {kind!r} is not one of {', '.join(map(repr, kinds))}; "
            "add it to transient.messages.kinds"
        )


def _checked(queue: str, items: Any) -> list[Any]:
    # A queue is whatever the session holds under "_f_<queue>": anything but a list is
    # treated as no queue at all, never iterated (a str would give one message a letter).
    if isinstance(items, list):
        return items
    log.warning("ignoring flash queue %r: it holds a %s, not a list", queue, type(items).__name__)
    return []


def _queue(session: Any, kind: str) -> list[Any]:
    items = session.peek_flash(kind)
    if not isinstance(items, list):
        session.pop_flash(kind)  # so that session.flash starts a new list
    return _checked(kind, items)


def _store(session: Any, message: Message, allow_duplicate: bool) -> bool:
    queued = _queue(session, message.kind)
    if not allow_duplicate:
        for item in queued:
            stored = Message.from_stored(item, message.kind)
            if stored is not None and stored.same_as(message):
                return False
    session.flash(message.to_json(), message.kind, allow_duplicate=True)
    return True


def flash(
    request: Any,
    text: str,
    kind: str = "info",
    *,
    msg_id: str | None = None,
    html: bool = False,
    extra: Mapping[str, Any] | None = None,
    allow_duplicate: bool = False,
    on_commit: bool = False,
) -> bool:
    """Queue a message for the user's next page; ``True`` if it was queued.

    A message equal to one already queued (same kind, text and ``msg_id``) is dropped
    unless ``allow_duplicate``. ``extra`` must be JSON-safe (our codec). With
    ``on_commit=True`` the message is kept only if the request's transaction (pyramid_tm)
    commits; a rolled-back savepoint drops the messages flashed since it; the return
    value is then ``True`` (decided at commit).

    Raises :class:`~pyramid_transient.exceptions.UnknownMessageKind` for a kind not in
    ``transient.messages.kinds`` and :class:`TypeError` for text or a ``msg_id`` that is
    not a string, or an ``extra`` the codec cannot store.
    """
    if not isinstance(text, str):
        raise InvalidArgument(f"flash message text must be a str, not {type(text).__name__}")
    if msg_id is not None and not isinstance(msg_id, str):
        # Stored otherwise, it would come back as None and defeat de-duplication.
        raise InvalidArgument(
            f"flash message msg_id must be a str or None, not {type(msg_id).__name__}"
        )
    _check_kind(request, kind)
    if extra is not None:
        try:
            codec.check(dict(extra))
        except TypeError as exc:
            raise UnsupportedValue(f"flash message extra cannot be stored: {exc}") from None
    message = Message(
        text, kind, msg_id, html, MappingProxyType(dict(extra)) if extra else MappingProxyType({})
    )
    session = request.session  # loaded now, so a commit hook never waits on Redis
    if on_commit:
        _queue_after_commit(request, session, message, allow_duplicate)
        return True
    return _store(session, message, allow_duplicate)


def _collect(request: Any, kinds: Iterable[str] | None, pop: bool) -> list[Message]:
    session = request.session
    wanted = message_kinds(request) if kinds is None else tuple(kinds)
    for kind in wanted:
        _check_kind(request, kind)
    messages: list[Message] = []
    queues = []
    for kind in wanted:
        queues.append((kind, kind))
        if kind == "info":  # Pyramid's default queue, right after our own info queue
            queues.append((_DEFAULT_QUEUE, "info"))
    for queue, kind in queues:
        if _QUEUE + queue not in session:
            continue
        items = session.pop_flash(queue) if pop else session.peek_flash(queue)
        for item in _checked(queue, items):
            message = Message.from_stored(item, kind)
            if message is not None:
                messages.append(message)
    return messages


def pop_messages(request: Any, kinds: Iterable[str] | None = None) -> list[Message]:
    """Remove and return the queued messages of ``kinds`` (all kinds by default).

    Messages come grouped by kind, in the order of ``transient.messages.kinds``, each
    kind in the order flashed.
    """
    return _collect(request, kinds, pop=True)


def peek_messages(request: Any, kinds: Iterable[str] | None = None) -> list[Message]:
    """Return the queued messages of ``kinds`` without removing them."""
    return _collect(request, kinds, pop=False)


def render_messages(messages: Iterable[Message]) -> Markup:
    """HTML for ``messages``: one ``<div class="msg msg-{kind}" role="status">`` each.

    Text is escaped unless the message was flashed with ``html=True``. The result is
    :class:`Markup`, so Jinja2's autoescaping leaves it as is:
    ``{{ render_messages(messages) }}``.
    """
    parts = []
    for message in messages:
        kind = _html.escape(message.kind, quote=True)
        role = "alert" if message.kind == "error" else "status"
        parts.append(f'<div class="msg msg-{kind}" role="{role}">{message.__html__()}</div>')
    return Markup("\n".join(parts))


# --------------------------------------------------------------------------- on_commit


def _queue_after_commit(
    request: Any, session: Any, message: Message, allow_duplicate: bool
) -> None:
    if not request.environ.get("tm.active"):
        raise TransientError(
            "flash(..., on_commit=True) needs the request's transaction: include pyramid_tm "
            "(and do not call it outside the transaction, e.g. from a response callback)"
        )

    def deliver() -> None:
        # Only touches the session already loaded in memory; the session's own save
        # writes the message at the end of the request.
        _store(session, message, allow_duplicate)

    after_commit(
        f"queueing an on_commit flash message of kind {message.kind!r}",
        deliver,
        transaction_manager=request.tm,
    )


def includeme(config: Any) -> None:
    """Register the manager, which carries ``transient.messages.kinds``.

    Nothing else is needed: messages live in ``request.session``.
    """
    from .connection import include_manager

    include_manager(config)
