"""Demo page: a list page and a detail page cached under self-invalidating keys.

Both pages are cached in the ``default`` region under ``request.cache_key(...)``: the list
under the ``Item`` class (its table token), the detail under the row's identity (its row
token, so a cache hit runs no SQL at all). The form updates a row; pyramid_tm commits, the
hooks delete the row and table tokens, and the next request of either page builds anew.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pyramid.httpexceptions import HTTPFound, HTTPNotFound

from ..cache import get_region
from ..connection import get_manager
from ..invalidation import register, row_identity
from . import models
from .models import Item


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


def item_detail(request: Any) -> Any:
    item_id = int(request.matchdict["id"])

    if request.method == "POST":
        item = request.dbsession.get(Item, item_id)
        if item is None:
            raise HTTPNotFound()
        item.name = request.POST.get("name", item.name).strip()[:100] or item.name
        price = request.POST.get("price", "")
        if price.strip().isdigit():
            item.price = int(price)
        # pyramid_tm commits after this view; the hooks then invalidate the tokens.
        return HTTPFound(request.route_url("cache_item", id=item_id))

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
    return {"page": page, "key": key}


def includeme(config: Any) -> None:
    config.include(models)
    if not get_manager(config.registry).settings.cache.sqlalchemy_session:
        register(models.session_factory, get_manager(config.registry))
    config.add_route("cache", "/cache")
    config.add_route("cache_item", r"/cache/{id:\d+}")
    config.add_view(item_list, route_name="cache", renderer="cache.jinja2")
    config.add_view(item_detail, route_name="cache_item", renderer="cache_item.jinja2")
