"""Demo page: a list page and a detail page cached under self-invalidating keys.

Both pages are cached in the ``default`` region under ``request.cache_key(...)``: the list
under the ``Item`` class (its table token), the detail under the row's identity (its row
token, so a cache hit runs no SQL at all). The form updates a row; pyramid_tm commits, the
hooks delete the row and table tokens, and the next request of either page builds anew.
An edit that is not valid (an empty name, a price that is not a whole number from 0 to
:data:`MAX_PRICE`) changes nothing and answers 400 with the page and the reason. Item ids
are at most :data:`MAX_ID_DIGITS` digits (a longer one is a 404, like any unknown id).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pyramid.httpexceptions import HTTPNotFound, HTTPSeeOther
from pyramid.renderers import render_to_response

from ..cache import get_region
from ..connection import get_manager
from ..invalidation import register, row_identity
from . import inputs, models
from .models import Item

#: Longest item name and highest price the edit form takes.
MAX_NAME = 100
MAX_PRICE = 1_000_000
#: Longest item id in a URL: every such id fits SQLite's 64-bit integers.
MAX_ID_DIGITS = 18


def _built() -> dict[str, str]:
    # Shown on the page: a new build id means the value was built, not read from cache.
    return {"build": uuid.uuid4().hex[:12], "built_at": dt.datetime.now().strftime("%H:%M:%S")}


def item_list(request: Any) -> dict[str, Any]:
    def build() -> dict[str, Any]:
        rows = request.dbsession.query(Item).order_by(Item.id).all()
        return {
            "items": [{"id": r.id, "name": r.name, "price": r.price} for r in rows],
            **_built(),
        }

    key = request.cache_key("demo:list", Item)
    page = get_region(request, "default").get_or_create(key, build)
    return {"page": page, "key": key}


def _edit(request: Any, item: Item) -> str | None:
    """Apply the form to ``item``; the reason it is refused, or ``None`` once applied."""
    name = request.POST.get("name", "").strip()
    if not 1 <= len(name) <= MAX_NAME:
        return f"The name must be 1 to {MAX_NAME} characters long (it was {len(name):,})."
    try:
        price = inputs.whole_number(request.POST.get("price", ""), "The price", 0, MAX_PRICE)
    except inputs.FormError as exc:
        return f"{exc}."
    item.name, item.price = name, price
    return None


def item_detail(request: Any) -> Any:
    item_id = int(request.matchdict["id"])  # the route allows MAX_ID_DIGITS digits at most

    if request.method == "POST":
        item = request.dbsession.get(Item, item_id)
        if item is None:
            raise HTTPNotFound()
        error = _edit(request, item)
        if error is None:
            # pyramid_tm commits after this view; the hooks then invalidate the tokens.
            return HTTPSeeOther(request.route_url("cache_item", id=item_id))
        request.tm.doom()  # write nothing of a refused edit
        request.response.status = 400
        page = {"id": item_id, "name": item.name, "price": item.price, "build": "", "built_at": ""}
        form = {
            "name": request.POST.get("name", "")[:200],
            "price": request.POST.get("price", "")[:40],
        }
        return render_to_response(
            "cache_item.jinja2",
            {"page": page, "key": None, "error": error, "form": form, **_page_extra(request)},
            request=request,
            response=request.response,
        )

    def build() -> dict[str, Any] | None:
        row = request.dbsession.get(Item, item_id)
        if row is None:
            return None
        return {"id": row.id, "name": row.name, "price": row.price, **_built()}

    # The key is taken before build() reads the row: a commit racing the build leaves its
    # value under a key nobody computes again.
    key = request.cache_key("demo:item", row_identity(Item.__table__, item_id))
    page = get_region(request, "default").get_or_create(
        key, build, should_cache_fn=lambda value: value is not None
    )
    if page is None:
        raise HTTPNotFound()
    return {"page": page, "key": key, "error": None, "form": None, **_page_extra(request)}


def _page_extra(request: Any) -> dict[str, Any]:
    return {
        "csrf_token": request.session.get_csrf_token(),
        "max_name": MAX_NAME,
        "max_price": MAX_PRICE,
    }


def includeme(config: Any) -> None:
    config.include(models)
    if not get_manager(config.registry).settings.cache.sqlalchemy_session:
        register(models.session_factory, get_manager(config.registry))
    config.add_route("cache", "/cache")
    config.add_route("cache_item", rf"/cache/{{id:[0-9]{{1,{MAX_ID_DIGITS}}}}}")
    config.add_view(item_list, route_name="cache", request_method="GET", renderer="cache.jinja2")
    config.add_view(
        item_detail,
        route_name="cache_item",
        request_method=("GET", "POST"),
        renderer="cache_item.jinja2",
    )
