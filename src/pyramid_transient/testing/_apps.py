"""A test app whose requests commit: :func:`committing_testapp`."""

from __future__ import annotations

from typing import Any

#: Environ keys of the Pyramid starter's ``testapp`` that make pyramid_tm skip its own
#: transaction and share the test's doomed one.
SHARED_TRANSACTION_KEYS = ("tm.active", "tm.manager", "app.dbsession")


def committing_testapp(app: Any, **extra_environ: Any) -> Any:
    """A ``webtest.TestApp`` over the WSGI ``app`` whose every request runs in its own
    transaction, which pyramid_tm commits (or aborts on an error) as in production.

    The Pyramid starter's ``testapp`` fixture shares one doomed transaction
    (``tm.active``, ``tm.manager``, ``app.dbsession`` in its environ): under it nothing
    commits, so cache invalidation, ``flash(..., on_commit=True)`` and tasks sent with
    :func:`~pyramid_transient.celery.delay_after_commit` never happen. Those keys are
    refused here. Data written through it stays written: clean the SQL database
    between tests yourself (the Redis test databases are flushed by
    ``transient_manager``).
    """
    import webtest

    shared = sorted(set(SHARED_TRANSACTION_KEYS) & set(extra_environ))
    if shared:
        from ..exceptions import InvalidArgument

        raise InvalidArgument(
            f"committing_testapp() runs each request in its own transaction; {shared} would "
            "share the test's (use the starter's testapp for that)"
        )
    extra_environ.setdefault("HTTP_HOST", "example.com")
    return webtest.TestApp(app, extra_environ=extra_environ)
