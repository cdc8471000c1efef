"""Demo page: the module safe (route ``safe``).

Two safes created at import time, before any app exists: this module's own, which the page
lists and edits, and a separate one that counts page views with an atomic block. Clearing
the first leaves the second alone. Values typed as JSON are stored with their types (a
list stays a list); ``update`` of several lines is all or nothing. Keys, values and the
lines of an update are limited in size (and JSON values in depth, :mod:`.inputs`); the
page states the limits and shows long values cut short. Every form is a POST protected
by Pyramid's CSRF check.
"""

from __future__ import annotations

from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ..safe import get_safe
from . import inputs

#: Longest key, and most lines in one update, the forms take.
MAX_KEY = 200
MAX_LINES = 100

#: This module's safe: what the page shows and edits.
safe = get_safe(__name__)
#: Another module's safe, as far as Redis is concerned: the page-view counter.
visits = get_safe(__name__ + ".visits")


def _back(request: Any) -> HTTPSeeOther:
    return HTTPSeeOther(request.route_url("safe"))


def _value(text: str, as_json: bool) -> Any:
    return inputs.json_value(text) if as_json else inputs.text_value(text)


def _key(text: str) -> str:
    key = text.strip()
    if not key:
        raise inputs.FormError("give the key a name")
    if len(key) > MAX_KEY:
        raise inputs.FormError(f"a key takes at most {MAX_KEY} characters, not {len(key):,}")
    return key


def _render(request: Any, error: str | None = None) -> dict[str, Any]:
    entries = sorted(safe.items())
    return {
        "views": visits.get("page", 0),
        "entries": [
            {
                "key": inputs.shorten(k, inputs.SHOWN_CHARS),
                "raw_key": k,
                "value": inputs.shown_repr(v),
                "type": type(v).__name__,
            }
            for k, v in entries
        ],
        "redis_key": safe.key,
        "error": error,
        "csrf_token": request.session.get_csrf_token(),
        "limits": {
            "key": MAX_KEY,
            "text": inputs.MAX_TEXT_CHARS,
            "json": inputs.MAX_JSON_CHARS,
            "depth": inputs.MAX_VALUE_DEPTH,
            "lines": MAX_LINES,
        },
    }


def _refuse(request: Any, error: str) -> dict[str, Any]:
    request.response.status = 400
    return _render(request, error)


def page(request: Any) -> dict[str, Any]:
    # Read-modify-write from many requests at once: retried on conflict, exact.
    for attempt in visits.atomic():
        with attempt as s:
            s["page"] = s.get("page", 0) + 1
    return _render(request)


def set_value(request: Any) -> Any:
    if not request.POST.get("key", "").strip():
        return _refuse(request, "Give the key a name.")
    try:
        key = _key(request.POST.get("key", ""))
        value = _value(request.POST.get("value", ""), bool(request.POST.get("json")))
        safe[key] = value
    except (TypeError, ValueError) as exc:  # FormError is a ValueError
        return _refuse(request, f"Not stored: {exc}.")
    return _back(request)


def update_values(request: Any) -> Any:
    """``key = JSON value`` per line, all stored in one HSET or none at all."""
    pairs: dict[str, Any] = {}
    lines = request.POST.get("lines", "").splitlines()
    if len(lines) > MAX_LINES:
        return _refuse(request, f"Nothing stored: an update takes at most {MAX_LINES} lines.")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, sep, text = line.partition("=")
        if not sep or not key.strip():
            return _refuse(request, f"Nothing stored: line {number} is not 'key = value'.")
        try:
            pairs[_key(key)] = _value(text.strip(), True)
        except ValueError as exc:
            return _refuse(request, f"Nothing stored: line {number}: {exc}.")
    try:
        safe.update(pairs)
    except (TypeError, ValueError) as exc:
        return _refuse(request, f"Nothing stored: {exc}.")
    return _back(request)


def delete_value(request: Any) -> HTTPSeeOther:
    safe.pop(request.POST.get("key", ""), None)
    return _back(request)


def clear(request: Any) -> HTTPSeeOther:
    safe.clear()
    return _back(request)


def includeme(config: Any) -> None:
    config.add_route("safe", "/safe")
    config.add_route("safe_set", "/safe/set")
    config.add_route("safe_update", "/safe/update")
    config.add_route("safe_delete", "/safe/delete")
    config.add_route("safe_clear", "/safe/clear")
    config.add_view(page, route_name="safe", renderer="safe.jinja2", request_method="GET")
    for route, view in (
        ("safe_set", set_value),
        ("safe_update", update_values),
        ("safe_delete", delete_value),
        ("safe_clear", clear),
    ):
        config.add_view(
            view,
            route_name=route,
            renderer="safe.jinja2",
            request_method="POST",
            require_csrf=True,
        )
