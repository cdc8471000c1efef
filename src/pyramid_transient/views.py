"""The default 503 answer for :class:`~pyramid_transient.exceptions.Unavailable`.

``config.include("pyramid_transient")`` registers :func:`unavailable_view` for every
:class:`~pyramid_transient.exceptions.Unavailable` (sessions', store's, models',
safes'...). An app answers otherwise by
registering its own exception view for it, which overrides this one::

    config.add_exception_view(my_page, context=Unavailable)

The visitor sees a short page and a ``Retry-After`` header; the cause (which database,
redis-py's error, the host) goes to the log only.
"""

from __future__ import annotations

import logging
from typing import Any

from pyramid.httpexceptions import HTTPServiceUnavailable

from .exceptions import Unavailable

log = logging.getLogger(__name__)

__all__ = ["RETRY_AFTER", "includeme", "unavailable_view"]

#: Seconds in the ``Retry-After`` header of the default 503 answer.
RETRY_AFTER = 5


def unavailable_view(exc: Unavailable, request: Any) -> HTTPServiceUnavailable:
    """503 with ``Retry-After``; the details are logged, never shown."""
    log.warning(
        "answering 503 to %s %s: %s (cause: %r)",
        request.method,
        request.path_qs,
        exc,
        exc.__cause__,
    )
    response = HTTPServiceUnavailable(
        detail="A service this page needs is unavailable for a moment. Please try again."
    )
    response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def includeme(config: Any) -> None:
    """Register :func:`unavailable_view` for :class:`Unavailable`."""
    config.add_exception_view(unavailable_view, context=Unavailable)
