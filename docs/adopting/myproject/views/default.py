from pyramid.httpexceptions import HTTPSeeOther
from pyramid.view import view_config

from pyramid_transient.cache import get_region
from pyramid_transient.celery import delay_after_commit
from pyramid_transient.invalidation import row_identity
from pyramid_transient.messages import flash

from ..models import Page
from ..tasks import page_renamed


@view_config(route_name="home", renderer="myproject:templates/home.jinja2")
def home(request):
    return {"pages": request.dbsession.query(Page).order_by(Page.id).all()}


@view_config(route_name="page", renderer="myproject:templates/page.jinja2")
def page(request):
    page_id = int(request.matchdict["id"])
    # The key first, from the row's identity: no SQL before it.
    key = request.cache_key("page", row_identity(Page.__table__, page_id))

    def load():
        return {"title": request.dbsession.get(Page, page_id).title}

    return {"page_id": page_id, **get_region(request, "pages").get_or_create(key, load)}


@view_config(route_name="rename", request_method="POST")
def rename(request):
    page = request.dbsession.get(Page, int(request.matchdict["id"]))
    page.title = request.POST["title"]
    flash(request, f"Renamed to {page.title}.", "success", on_commit=True)
    delay_after_commit(request, page_renamed, page.id, page.title)
    if request.POST.get("fail"):
        raise ValueError("the rename fails after its changes: the transaction aborts")
    return HTTPSeeOther(request.route_url("page", id=page.id))
