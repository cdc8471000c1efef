"""Demo page of the nested-dict store: a tree you can write, count in and expire.

``set`` and ``delete`` are one Lua script call (one round trip) each, whatever the size of
the subtree; ``add`` takes a tree lock on the path's first element, adds and releases
the lock (three calls, uncontended). Paths, values and expiries are limited
(:data:`MAX_PATH_ELEMENTS`, :data:`MAX_PATH_CHARS`, the limits of :mod:`.inputs`,
:data:`MAX_EXPIRE`) and the page states the limits. The page shows each child of the
section with its value (capped in depth and length, whatever is stored) and when it, or
the soonest-expiring node inside it, expires.
"""

from __future__ import annotations

from typing import Any

from pyramid.httpexceptions import HTTPSeeOther
from pyramid.renderers import render_to_response

from ..exceptions import LockTimeout
from ..store import Proxy
from . import inputs

#: The section the demo writes to (its own first-level namespace).
SECTION = "demo"
#: Most dot-separated elements in a path the form takes, and its longest length.
MAX_PATH_ELEMENTS = 8
MAX_PATH_CHARS = 200
#: Longest expiry the form takes, in seconds (30 days).
MAX_EXPIRE = 30 * 24 * 3600
#: Most nodes looked at inside one child to find the soonest expiry below it.
EXPIRY_SCAN_NODES = 50


def _section(request: Any) -> Proxy:
    return request.store.get(SECTION)  # type: ignore[no-any-return]


def _soonest_inside(child: Proxy) -> tuple[str, float] | str | None:
    """The node below ``child`` that expires first, and its time to live, among the first
    :data:`EXPIRY_SCAN_NODES` nodes (breadth first); if none does, ``None``, or a note
    when there were more nodes than that."""
    soonest: tuple[str, float] | None = None
    queue, seen = [child], 0
    while queue and seen < EXPIRY_SCAN_NODES:
        node = queue.pop(0)
        for grandchild in node.iter_children():
            seen += 1
            ttl = grandchild.time_to_live()
            if ttl is None or ttl < 0:
                queue.append(grandchild)
            elif soonest is None or ttl < soonest[1]:
                # Nothing below a node outlives it: no need to look further down.
                soonest = (grandchild.key(), ttl)
            if seen >= EXPIRY_SCAN_NODES:
                break
    if soonest is None and queue and seen >= EXPIRY_SCAN_NODES:
        return f"no expiry among the first {EXPIRY_SCAN_NODES} nodes inside"
    return soonest


def _page(
    request: Any, error: str | None = None, form: dict[str, str] | None = None
) -> dict[str, Any]:
    children = []
    for child in _section(request).iter_children():
        ttl = child.time_to_live()
        children.append(
            {
                "path": child.key(),
                "value": inputs.shown(child.val()),
                "ttl": ttl,
                "inside": _soonest_inside(child) if ttl == -1 else None,
            }
        )
    if error is not None:
        request.response.status = 400
    return {
        "children": children,
        "error": error,
        "form": form or {},
        "section": SECTION,
        "csrf_token": request.session.get_csrf_token(),
        "limits": {
            "path_elements": MAX_PATH_ELEMENTS,
            "path_chars": MAX_PATH_CHARS,
            "json_chars": inputs.MAX_JSON_CHARS,
            "value_depth": inputs.MAX_VALUE_DEPTH,
            "expire": MAX_EXPIRE,
        },
    }


def store_page(request: Any) -> dict[str, Any]:
    return _page(request)


def _path(text: str) -> str:
    if not text:
        raise inputs.FormError("give a path, such as cart.items")
    if len(text) > MAX_PATH_CHARS:
        raise inputs.FormError(
            f"the path is {len(text):,} characters long; the demo takes at most {MAX_PATH_CHARS}"
        )
    if text.count(".") >= MAX_PATH_ELEMENTS:
        raise inputs.FormError(
            f"the path has {text.count('.') + 1} elements; the demo takes at most "
            f"{MAX_PATH_ELEMENTS}"
        )
    return text


def store_post(request: Any) -> Any:
    form = {k: request.POST.get(k, "").strip() for k in ("action", "path", "value", "expire")}
    sect = _section(request)
    try:
        action = form["action"]
        if action not in ("set", "add", "delete"):
            raise inputs.FormError(f"unknown action {action[:20]!r}: use set, add or delete")
        path = _path(form["path"])
        if action == "set":
            value = inputs.json_value(form["value"] or "null")
            expire = (
                inputs.seconds(form["expire"], "Expire", MAX_EXPIRE) if form["expire"] else None
            )
            sect.set(path, value, expire=expire)
        elif action == "add":
            with sect.get(path.split(".")[0]):  # a tree lock around the first element
                sect.get(path).add(1)
        else:
            sect.delete(path)
    except (ValueError, TypeError, LockTimeout) as exc:  # FormError is a ValueError
        return _render_error(request, str(exc), form)
    return HTTPSeeOther(request.route_url("store"))


def _render_error(request: Any, message: str, form: dict[str, str]) -> Any:
    shown_form = {k: v[:MAX_PATH_CHARS] if k != "value" else v[:2000] for k, v in form.items()}
    return render_to_response(
        "store.jinja2",
        _page(request, message, shown_form),
        request=request,
        response=request.response,
    )


def includeme(config: Any) -> None:
    config.add_route("store", "/store")
    config.add_view(store_page, route_name="store", request_method="GET", renderer="store.jinja2")
    config.add_view(store_post, route_name="store", request_method="POST")
