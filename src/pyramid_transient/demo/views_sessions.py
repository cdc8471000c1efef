"""Demo page: sessions and flash messages (route ``sessions``).

A counter kept in the session, flash messages of every kind (always escaped: the page
never flashes a visitor's text as HTML), peek versus pop, ``on_commit`` messages with a
transaction that commits or aborts, a conflict that pyramid_retry (included by the demo)
retries, id rotation and invalidation. Every form is a POST protected by Pyramid's
default CSRF policy, which keeps its token in our session.
"""

from __future__ import annotations

from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ..exceptions import UnknownMessageKind
from ..messages import flash, message_kinds, peek_messages, pop_messages, render_messages
from ..sessions import rotate_session
from .errors import BadInput

#: Longest message text and ``msg_id`` the form takes, in characters.
MAX_TEXT = 500
MAX_MSG_ID = 50


def _back(request: Any) -> HTTPSeeOther:
    return HTTPSeeOther(request.route_url("sessions"))


def page(request: Any) -> dict[str, Any]:
    session = request.session
    return {
        "counter": session.get("counter", 0),
        "messages": render_messages(pop_messages(request)),
        "kinds": message_kinds(request),
        "csrf_token": session.get_csrf_token(),
        "max_text": MAX_TEXT,
        "max_msg_id": MAX_MSG_ID,
    }


def state(request: Any) -> dict[str, Any]:
    """The session as JSON, without consuming messages."""
    session = request.session
    return {
        "counter": session.get("counter", 0),
        "new": session.new,
        "csrf_token": session.get_csrf_token(),
        "messages": [
            {"kind": m.kind, "text": m.text, "html": m.__html__()} for m in peek_messages(request)
        ],
    }


def increment(request: Any) -> HTTPSeeOther:
    request.session["counter"] = request.session.get("counter", 0) + 1
    return _back(request)


def add_message(request: Any) -> HTTPSeeOther:
    params = request.POST
    text, msg_id = params.get("text", ""), params.get("msg_id", "")
    if len(text) > MAX_TEXT or len(msg_id) > MAX_MSG_ID:
        raise BadInput(
            f"A message takes at most {MAX_TEXT} characters and a msg_id at most "
            f"{MAX_MSG_ID}; nothing was flashed."
        )
    try:
        # Never html=True from a form: a visitor's text is always escaped.
        flash(
            request,
            text,
            params.get("kind", "info"),
            msg_id=msg_id or None,
            on_commit=bool(params.get("on_commit")),
        )
    except UnknownMessageKind as exc:  # the form offers only known kinds; a crafted POST
        raise BadInput(str(exc)) from exc
    if params.get("abort"):
        # The view succeeds but its transaction is rolled back: on_commit messages vanish.
        request.tm.doom()
    return _back(request)


class _ConflictAtCommit:
    """Fails the first attempt's commit like a serialization failure would."""

    def __init__(self, manager: Any) -> None:
        self.transaction_manager = manager

    def abort(self, txn: Any) -> None:
        pass

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        from transaction.interfaces import TransientError

        raise TransientError("simulated serialization failure")

    def tpc_finish(self, txn: Any) -> None:
        pass

    def tpc_abort(self, txn: Any) -> None:
        pass

    def sortKey(self) -> str:
        return "demo-conflict"


def conflict(request: Any) -> HTTPSeeOther:
    """Change the session, then fail the commit of the first attempt."""
    attempt = request.environ.get("retry.attempt", 0)
    request.session["counter"] = request.session.get("counter", 0) + 1
    flash(request, "Saved after a retried conflict.", "success")
    if attempt == 0:
        request.tm.get().join(_ConflictAtCommit(request.tm))
    return _back(request)


def rotate(request: Any) -> HTTPSeeOther:
    rotate_session(request)
    flash(request, "New session id, same data.", "info")
    return _back(request)


def invalidate(request: Any) -> HTTPSeeOther:
    request.session.invalidate()
    return _back(request)


def includeme(config: Any) -> None:
    config.add_route("sessions", "/sessions")
    config.add_route("sessions_state", "/sessions/state")
    config.add_route("sessions_increment", "/sessions/increment")
    config.add_route("sessions_flash", "/sessions/flash")
    config.add_route("sessions_conflict", "/sessions/conflict")
    config.add_route("sessions_rotate", "/sessions/rotate")
    config.add_route("sessions_invalidate", "/sessions/invalidate")
    config.add_view(page, route_name="sessions", request_method="GET", renderer="sessions.jinja2")
    config.add_view(state, route_name="sessions_state", request_method="GET", renderer="json")
    for route, view in (
        ("sessions_increment", increment),
        ("sessions_flash", add_message),
        ("sessions_conflict", conflict),
        ("sessions_rotate", rotate),
        ("sessions_invalidate", invalidate),
    ):
        config.add_view(view, route_name=route, request_method="POST", require_csrf=True)
