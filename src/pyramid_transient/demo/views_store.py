"""Demo page of the nested-dict store: a tree you can write, count in and expire."""

from __future__ import annotations

import json
from typing import Any

from pyramid.httpexceptions import HTTPSeeOther

from ..exceptions import LockTimeout
from ..store import Proxy

#: The section the demo writes to (its own first-level namespace).
SECTION = "demo"


def _section(request: Any) -> Proxy:
    return request.store.get(SECTION)  # type: ignore[no-any-return]


def _page(
    request: Any, error: str | None = None, form: dict[str, str] | None = None
) -> dict[str, Any]:
    sect = _section(request)
    children = []
    for child in sect.iter_children():
        children.append(
            {
                "path": child.key(),
                "value": json.dumps(child.val(), indent=2, sort_keys=True, default=str),
                "ttl": child.time_to_live(),
            }
        )
    if error is not None:
        request.response.status = 400
    return {"children": children, "error": error, "form": form or {}, "section": SECTION}


def store_page(request: Any) -> dict[str, Any]:
    return _page(request)


def store_post(request: Any) -> Any:
    form = {k: request.POST.get(k, "").strip() for k in ("action", "path", "value", "expire")}
    sect = _section(request)
    try:
        path = form["path"]
        action = form["action"]
        if action == "set":
            value = json.loads(form["value"] or "null")
            expire = float(form["expire"]) if form["expire"] else None
            sect.set(path, value, expire=expire)
        elif action == "add":
            with sect.get(path.split(".")[0]):  # a tree lock around the first element
                sect.get(path).add(1)
        elif action == "delete":
            sect.delete(path)
        else:
            raise ValueError(f"unknown action {action!r}: use set, add or delete")
    except json.JSONDecodeError as exc:
        return _render_error(request, f"value is not JSON: {exc}", form)
    except (ValueError, TypeError, LockTimeout) as exc:
        return _render_error(request, str(exc), form)
    return HTTPSeeOther(request.route_url("store"))


def _render_error(request: Any, message: str, form: dict[str, str]) -> Any:
    from pyramid.renderers import render_to_response

    return render_to_response(
        "store.jinja2", _page(request, message, form), request=request, response=request.response
    )


def includeme(config: Any) -> None:
    config.add_route("store", "/store")
    config.add_view(store_page, route_name="store", request_method="GET", renderer="store.jinja2")
    config.add_view(store_post, route_name="store", request_method="POST")
