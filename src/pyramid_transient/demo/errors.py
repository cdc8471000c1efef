"""The demo's error pages: the layout, a short reason, a link home, and no internals.

A 4xx page gives Pyramid's explanation of the status, the demo's own wording for a failed
CSRF check, or the detail of a :class:`BadInput` (written for visitors). A 500 page says
only that something failed: the traceback goes to the log. The 503 page for an unreachable
session store logs the error (which names the server and the session key) and shows
neither.
"""

from __future__ import annotations

import logging
from typing import Any

from pyramid.exceptions import BadCSRFToken
from pyramid.httpexceptions import HTTPBadRequest, HTTPError
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid_retry import is_error_retryable, is_last_attempt

from ..exceptions import SessionTooLarge, SessionUnavailable, Unavailable

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait before trying again after a 503.
RETRY_AFTER = 5
#: Largest request body the demo reads, in bytes; its forms send far less.
MAX_BODY = 64 * 1024


class DemoRequest(Request):  # type: ignore[misc]  # pyramid ships no types
    """Pyramid's request, keeping bodies up to 1 MiB in memory.

    pyramid_retry makes every body seekable before the app runs (so a retry can read it
    again), and webob copies a body over 10 KiB to a temporary file that nobody closes.
    """

    request_body_tempfile_limit = 1024 * 1024


def body_limit(handler: Any, registry: Any) -> Any:
    """A tween answering 413 to a body over :data:`MAX_BODY`, before anything reads it."""

    def tween(request: Any) -> Any:
        if (request.content_length or 0) > MAX_BODY:
            return error_page(
                request,
                413,
                "Too much data",
                f"The request sent {request.content_length:,} bytes; the demo takes at most "
                f"{MAX_BODY:,}. Nothing was changed.",
            )
        return handler(request)

    return tween


def error_page(
    request: Any, status: int, title: str, message: str, headers: dict[str, str] | None = None
) -> Any:
    response = render_to_response(
        "error.jinja2",
        {"status": status, "title": title, "message": message},
        request=request,
    )
    response.status_int = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


class BadInput(HTTPBadRequest):  # type: ignore[misc]  # pyramid ships no types
    """A 400 whose detail is written for the visitor, so the error page shows it."""


CSRF_MESSAGE = (
    "This form's CSRF token is missing or does not belong to your session (which may have "
    "expired). Reload the page and submit the form again."
)


def http_error(exc: HTTPError, request: Any) -> Any:
    """4xx and 5xx answers Pyramid or a view raised (404, the CSRF check's 400, ...).

    Only a :class:`BadInput`'s detail is shown; Pyramid's own details (the path, the view
    predicates that did not match) are for developers, so the page shows its explanation.
    """
    if isinstance(exc, BadCSRFToken):
        detail = CSRF_MESSAGE
    elif isinstance(exc, BadInput) and exc.detail:
        detail = str(exc.detail)
    else:
        detail = exc.explanation
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return error_page(request, exc.code or 500, exc.title, detail, headers)


def session_too_large(exc: SessionTooLarge, request: Any) -> Any:
    log.warning("refused a session save: %s", exc)
    return error_page(
        request,
        413,
        "Too much in the session",
        "That would make your session larger than this site keeps "
        "(transient.sessions.max_bytes); nothing was saved.",
    )


def unavailable(exc: Unavailable, request: Any) -> Any:
    # The library's own 503 view answers every Unavailable; this one, registered by the
    # app's main (the includer of pyramid_transient), overrides it with the demo's page.
    log.error("Redis is unavailable (database %r): %s", exc.database, exc)
    what = "Sessions" if isinstance(exc, SessionUnavailable) else "The data this page needs"
    return error_page(
        request,
        503,
        "Service unavailable",
        f"{what} cannot be read or saved right now. Please try again in a moment.",
        {"Retry-After": str(RETRY_AFTER)},
    )


def server_error(exc: Exception, request: Any) -> Any:
    if is_error_retryable(request, exc) and not is_last_attempt(request):
        # pyramid_retry throws this response away and tries the request again.
        log.info("retrying %s %s after %r", request.method, request.path_qs, exc)
    else:
        log.error("error answering %s %s", request.method, request.path_qs, exc_info=exc)
    return error_page(
        request, 500, "Server error", "Something went wrong on our side; it has been logged."
    )


def includeme(config: Any) -> None:
    config.set_request_factory(DemoRequest)
    config.add_tween("pyramid_transient.demo.errors.body_limit")
    config.add_exception_view(http_error, context=HTTPError)
    config.add_exception_view(session_too_large, context=SessionTooLarge)
    config.add_exception_view(server_error, context=Exception)
