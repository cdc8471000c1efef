"""Demo page: the module safe (route ``safe``).

Two safes created at import time, before any app exists: this module's own, which the page
lists and edits, and a separate one that counts page views with an atomic block. Clearing
the first leaves the second alone. Values typed as JSON are stored with their types (a
list stays a list); ``update`` of several lines is all or nothing. Every form is a POST
protected by Pyramid's CSRF check.
"""

from __future__ import annotations

import json
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ..safe import get_safe

#: This module's safe: what the page shows and edits.
safe = get_safe(__name__)
#: Another module's safe, as far as Redis is concerned: the page-view counter.
visits = get_safe(__name__ + ".visits")


def _back(request: Any) -> HTTPSeeOther:
    return HTTPSeeOther(request.route_url("safe"))


def _value(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the value {text!r} is not JSON ({exc})") from None


def _render(request: Any, error: str | None = None) -> dict[str, Any]:
    entries = sorted(safe.items())
    return {
        "views": visits.get("page", 0),
        "entries": [{"key": k, "value": repr(v), "type": type(v).__name__} for k, v in entries],
        "redis_key": safe.key,
        "error": error,
        "csrf_token": request.session.get_csrf_token(),
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
    key = request.POST.get("key", "").strip()
    if not key:
        return _refuse(request, "Give the key a name.")
    try:
        value = _value(request.POST.get("value", ""), bool(request.POST.get("json")))
        safe[key] = value
    except (TypeError, ValueError) as exc:
        return _refuse(request, f"Not stored: {exc}.")
    return _back(request)


def update_values(request: Any) -> Any:
    """``key = JSON value`` per line, all stored in one HSET or none at all."""
    pairs: dict[str, Any] = {}
    for number, line in enumerate(request.POST.get("lines", "").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, text = line.partition("=")
        if not sep or not key.strip():
            return _refuse(request, f"Nothing stored: line {number} is not 'key = value'.")
        try:
            pairs[key.strip()] = _value(text.strip(), True)
        except ValueError as exc:
            return _refuse(request, f"Nothing stored: line {number}: {exc}.")
    safe.update(pairs)
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
