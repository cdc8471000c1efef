"""Demo page of Redis models: tasks with indexed status and priority, each expiring alone.

Saves and deletes are deferred to pyramid_tm's commit (``on_commit=True``): a request that
fails or is aborted writes nothing, and a committed one writes after its commit, before
the redirect is sent. A write whose reply is lost at that moment is sent once more (it
carries its identity, so it is applied once); one that still fails is logged and
announced as an :class:`~pyramid_transient.transactions.AfterCommitFailed` event, which
this page turns into an error message shown after the redirect: the redirect alone does
not prove the write.
Form fields are checked first: an invalid task, an unknown task or a filter outside its
range answers 400 with the page and the reason.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from pydantic import Field, ValidationError
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.renderers import render_to_response

from ..exceptions import ObjectNotFound
from ..messages import flash, pop_messages, render_messages
from ..models import RedisModel
from ..transactions import AfterCommitFailed
from . import inputs

#: Longest task id the forms take (generated ids are far shorter).
MAX_PK = 64


class Status(enum.StrEnum):
    todo = "todo"
    doing = "doing"
    done = "done"


class DemoTask(RedisModel):
    """A task of the demo: generated key, expires an hour after its last save."""

    __expire__: ClassVar[float | None] = 3600
    __indexes__: ClassVar[tuple[str, ...]] = ("status", "priority")

    title: str = Field(min_length=1, max_length=200)
    priority: int = Field(default=1, ge=1, le=5)
    status: Status = Status.todo


NEXT = {Status.todo: Status.doing, Status.doing: Status.done, Status.done: Status.todo}


def _page(request: Any, error: str | None = None) -> dict[str, Any]:
    status = request.GET.get("status", "")
    min_priority = request.GET.get("min_priority", "").strip()
    lookups: dict[str, Any] = {}
    if status in Status.__members__:
        lookups["status"] = status
    elif status:
        error = error or f"Unknown status {status[:20]!r}: use one of todo, doing, done."
        status = ""
    if min_priority:
        try:
            lookups["priority__gte"] = inputs.whole_number(min_priority, "Min priority", 1, 5)
        except inputs.FormError as exc:
            error = error or f"{exc}."
            min_priority = ""
    tasks = DemoTask.objects.filter(**lookups) if lookups else DemoTask.objects.all()
    tasks.sort(key=lambda t: (-t.priority, t.title))
    if error is not None:
        request.response.status = 400
    return {
        "messages": render_messages(pop_messages(request)),
        "tasks": tasks,
        "key_of": DemoTask.objects.key_of,
        "total": DemoTask.objects.count(),
        "statuses": list(Status),
        "status": status,
        "min_priority": min_priority,
        "lookups": lookups,
        "error": error,
        "csrf_token": request.session.get_csrf_token(),
    }


def models_page(request: Any) -> dict[str, Any]:
    return _page(request)


def models_post(request: Any) -> Any:
    action = request.POST.get("action", "")
    try:
        if action == "add":
            DemoTask(
                title=request.POST.get("title", "").strip(),
                priority=inputs.whole_number(request.POST.get("priority", "1"), "priority", 1, 5),
                status=request.POST.get("status", "todo")[:20],
            ).save(on_commit=True)
        elif action in ("advance", "delete"):
            pk = request.POST.get("pk", "")
            if not pk or len(pk) > MAX_PK:
                raise ObjectNotFound(pk[:MAX_PK])
            task = DemoTask.objects.get(pk)
            if action == "advance":
                task.status = NEXT[task.status]
                task.save(on_commit=True)
            else:
                task.delete(on_commit=True)
        else:
            raise ValueError(f"unknown action {action[:20]!r}: use add, advance or delete")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _render_error(request, f"invalid task: {problems}")
    except inputs.FormError as exc:
        return _render_error(request, f"invalid task: {exc}")
    except ObjectNotFound:
        return _render_error(request, "that task does not exist any more")
    except ValueError as exc:
        return _render_error(request, str(exc))
    return HTTPSeeOther(request.route_url("models"))


def _render_error(request: Any, message: str) -> Any:
    return render_to_response(
        "models.jinja2", _page(request, error=message), request=request, response=request.response
    )


def tell_the_user(event: AfterCommitFailed) -> None:
    """Flash the failure of a deferred write to the visitor whose request made it."""
    from pyramid.threadlocal import get_current_request

    request = get_current_request()
    if request is None or not event.what.startswith("deferred "):
        return
    what = event.what.removeprefix("deferred ").replace("DemoTask", "task")
    flash(
        request,
        f"The {what} may not have been applied: Redis could not be reached after the "
        "commit. Check the list below, and try again if it is not there.",
        "error",
    )


def includeme(config: Any) -> None:
    config.add_subscriber(tell_the_user, AfterCommitFailed)
    config.add_route("models", "/models")
    config.add_view(
        models_page, route_name="models", request_method="GET", renderer="models.jinja2"
    )
    config.add_view(models_post, route_name="models", request_method="POST")
