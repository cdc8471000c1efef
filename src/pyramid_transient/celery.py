"""Celery on the app's named database: broker and results from ``url_for("celery")``, tasks
sent only when the request's transaction commits.

In the web process, once ``pyramid_transient`` is included::

    from pyramid_transient.celery import configure
    configure(celery_app, config.registry)

In the worker, started with the same ini file::

    # myproject/tasks.py
    celery_app = Celery("myproject")
    setup_worker(celery_app)   # adds --ini

    $ celery -A myproject.tasks worker --ini production.ini

:func:`setup_worker` bootstraps the app from the ini (:func:`bootstrap_worker`), points
the broker and the result backend at its ``celery`` database, and makes its manager the
one capabilities without a client use in every thread of the worker
(:func:`~pyramid_transient.connection.set_default_manager`), so ``get_safe(__name__)``,
models and ``CacheKeyGenerator(None)`` work inside tasks.

:func:`delay_after_commit` sends a task after ``request.tm`` commits, never on abort. On
Sentinel, Kombu needs the master's name in ``transport_options``: :func:`configure` sets
``master_name`` (and the sentinels' password) for the broker and the result backend.
Celery is an optional dependency (the ``celery`` extra), imported only here.
"""

from __future__ import annotations

from typing import Any

from .connection import RedisManager, current_manager, get_manager, set_default_manager
from .exceptions import InvalidArgument, UsageError
from .transactions import after_commit

__all__ = ["bootstrap_worker", "configure", "delay_after_commit", "setup_worker"]


def _manager(target: Any) -> RedisManager:
    if target is None:
        return current_manager()
    if isinstance(target, RedisManager):
        return target
    registry = getattr(target, "registry", target)  # a Configurator, a request
    return get_manager(registry)


def configure(celery_app: Any, target: Any = None, name: str = "celery") -> None:
    """Point ``celery_app``'s broker and result backend at database ``name`` of the app.

    ``target`` is a registry, a request, a Configurator or a
    :class:`~pyramid_transient.connection.RedisManager` (``None``: the running app's).
    Raises :class:`~pyramid_transient.exceptions.ConfigurationError` on ``memory://``
    (a worker could not reach it) and on a Cluster (Kombu needs one server).
    """
    manager = _manager(target)
    url = manager.url_for(name)
    conf = celery_app.conf
    conf.broker_url = url
    conf.result_backend = url
    if conf.broker_connection_retry_on_startup is None:
        # Celery's default, said explicitly: it warns when the setting is left unset.
        conf.broker_connection_retry_on_startup = True
    if manager.mode == "sentinel":
        s = manager.settings
        options: dict[str, Any] = {"master_name": s.sentinel_service}
        if s.sentinel_password:
            options["sentinel_kwargs"] = {"password": s.sentinel_password}
        conf.broker_transport_options = {**(conf.broker_transport_options or {}), **options}
        conf.result_backend_transport_options = {
            **(conf.result_backend_transport_options or {}),
            **options,
        }


def bootstrap_worker(celery_app: Any, ini: str, name: str = "celery") -> Any:
    """Bootstrap the Pyramid app of ``ini`` in this (worker) process and configure
    ``celery_app`` from it; returns the app's registry.

    The app's manager becomes the default one of the process
    (:func:`~pyramid_transient.connection.set_default_manager`), so capabilities used
    inside tasks find it in any thread, without a Pyramid request.
    """
    from pyramid.paster import bootstrap

    env = bootstrap(ini)
    try:
        registry = env["registry"]
        manager = get_manager(registry)
    finally:
        # No request stays current: a task is not part of one (its after-commit work
        # would wait for a transaction nobody commits).
        env["closer"]()
    set_default_manager(manager)
    configure(celery_app, manager, name)
    return registry


def setup_worker(celery_app: Any, name: str = "celery") -> None:
    """Give ``celery_app``'s commands an ``--ini`` option that bootstraps that app
    (:func:`bootstrap_worker`): ``celery -A myproject.tasks worker --ini production.ini``.

    Harmless in the web process, where no Celery command runs.
    """
    import click
    from celery import signals

    celery_app.user_options["preload"].add(
        click.Option(
            ["--ini"],
            default=None,
            help="the Pyramid ini file of the app whose tasks these are",
        )
    )

    def on_preload(sender: Any = None, app: Any = None, options: Any = None, **_: Any) -> None:
        ini = (options or {}).get("ini")
        if ini and (app is None or app is celery_app):
            bootstrap_worker(celery_app, ini, name)

    signals.user_preload_options.connect(on_preload, weak=False)


def delay_after_commit(request: Any, task: Any, *args: Any, **kwargs: Any) -> None:
    """Send ``task(*args, **kwargs)`` once ``request``'s transaction (``request.tm``)
    commits; never when it aborts.

    Checked now: ``task`` must be a Celery task (it has ``apply_async``) and the request
    must have pyramid_tm's transaction. A send that fails after the commit is logged and
    announced as :class:`~pyramid_transient.transactions.AfterCommitFailed`, never raised.
    """
    send = getattr(task, "apply_async", None)
    if not callable(send):
        raise InvalidArgument(f"delay_after_commit() needs a Celery task, not {task!r}")
    if getattr(request, "tm", None) is None:
        raise UsageError(
            "delay_after_commit() needs the request's transaction: include pyramid_tm "
            "(request.tm), or call task.delay() yourself outside a transaction"
        )
    after_commit(
        f"sending Celery task {getattr(task, 'name', task)!r}",
        lambda: send(args, kwargs),
        request=request,
    )
