"""Work that runs only after the surrounding ``transaction`` commits.

DESIGN section 6: side effects that depend on the SQL transaction run only after a
successful commit, are dropped on abort, and are savepoint-aware (rolling a savepoint back
drops only the work recorded after it). :func:`after_commit` records a callable in a data
manager joined to the current transaction (pyramid_tm's ``request.tm``, found from the
request given or the current one, else the thread's default manager); the data manager
runs it in ``tpc_finish``, after every other resource, the SQL database included, has
committed. Nothing there may raise into the application.

A connection error may come after Redis ran an action (a lost reply), so an action is sent
again only when it was recorded as *idempotent*: its write carries its own identity, so
that a copy of one already applied is a no-op (models' deferred saves and deletes). Such an
action is sent once more after :class:`~pyramid_transient.exceptions.Unavailable`; any
other action is never sent twice. What still fails is logged at ERROR, naming the action,
and announced as an :class:`AfterCommitFailed` event, which an app can subscribe to
(``config.add_subscriber(tell_the_user, AfterCommitFailed)``) to tell the user or to queue
a repair.

Used by ``flash(..., on_commit=True)`` and by models' ``save(on_commit=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .exceptions import Unavailable

log = logging.getLogger(__name__)

__all__ = ["AfterCommit", "AfterCommitFailed", "after_commit", "transaction_manager_of"]


class AfterCommitFailed:
    """A Pyramid event: work deferred to the commit failed after the database committed.

    Notified on the current registry (inside a request: the app's), once per failed
    action, after it was logged (and, for an idempotent action, after its one re-send
    failed too; see the module docstring).
    """

    def __init__(self, what: str, error: BaseException) -> None:
        #: The action's description, e.g. ``"deferred save of Task '3'"``.
        self.what = what
        #: What it raised (:class:`~pyramid_transient.exceptions.Unavailable` when Redis
        #: could not be reached; the write may or may not have been applied).
        self.error = error

    @classmethod
    def announce(cls, what: str, error: BaseException) -> None:
        """Notify the current registry's subscribers of the failure of ``what``
        (deferred work here; a cache invalidation in :mod:`pyramid_transient.cache`).
        A subscriber's own exception is logged, never raised: the commit is done."""
        from pyramid.threadlocal import get_current_registry

        try:
            get_current_registry().notify(cls(what, error))
        except Exception:  # a subscriber's own failure must not hide the others' work
            log.exception("a subscriber to AfterCommitFailed for %s failed", what)


#: ``transaction`` orders resources by ``sortKey()``; zope.sqlalchemy's start with
#: ``"~sqlalchemy:"``, and ours must finish after them.
SORT_KEY = "~~pyramid_transient"


class _Savepoint:
    def __init__(self, manager: AfterCommit) -> None:
        self.manager = manager
        self.size = len(manager.work)

    def rollback(self) -> None:
        del self.manager.work[self.size :]


class AfterCommit:
    """A ``transaction`` data manager holding work until the transaction commits."""

    def __init__(self, transaction_manager: Any = None) -> None:
        #: Used by ``transaction`` for savepoints and by ``IDataManager`` conformance.
        self.transaction_manager = transaction_manager
        #: ``(description, callable, idempotent)``, run in order after the commit.
        self.work: list[tuple[str, Callable[[], None], bool]] = []
        #: Whether the transaction holds this manager. Rolling back a savepoint taken
        #: before it joined aborts it and removes it from the transaction.
        self.joined = False

    def add(self, what: str, action: Callable[[], None], idempotent: bool = False) -> None:
        self.work.append((what, action, idempotent))

    # IDataManager
    def abort(self, txn: Any) -> None:
        self.work.clear()
        self.joined = False

    def tpc_begin(self, txn: Any) -> None:
        pass

    def commit(self, txn: Any) -> None:
        pass

    def tpc_vote(self, txn: Any) -> None:
        pass

    def tpc_finish(self, txn: Any) -> None:
        # The database has committed: log, never raise.
        work, self.work = self.work, []
        for what, action, idempotent in work:
            sent = 1
            try:
                try:
                    action()
                except Unavailable as exc:
                    if not idempotent:
                        raise
                    log.info("%s: sending it again after %s (a copy is a no-op)", what, exc)
                    sent += 1
                    action()
            except Exception as exc:
                log.error(
                    "%s failed after the transaction committed and was not applied, or its "
                    "outcome is unknown (%s): %s",
                    what,
                    "sent twice, applied at most once" if sent > 1 else "never sent twice",
                    exc,
                    exc_info=True,
                )
                AfterCommitFailed.announce(what, exc)

    def tpc_abort(self, txn: Any) -> None:
        self.work.clear()

    def sortKey(self) -> str:  # the transaction package's spelling
        return SORT_KEY

    # ISavepointDataManager
    def savepoint(self) -> _Savepoint:
        return _Savepoint(self)


_DATA_KEY = object()


def transaction_manager_of(request: Any = None, transaction_manager: Any = None) -> Any:
    """The transaction manager work of this request joins: ``transaction_manager`` when
    given, else ``request.tm`` (pyramid_tm's; with ``tm.manager_hook =
    pyramid_tm.explicit_manager`` it is not the thread's default), else the current
    request's ``tm``, else the thread's default manager (outside requests)."""
    if transaction_manager is not None:
        return transaction_manager
    if request is None:
        from pyramid.threadlocal import get_current_request

        request = get_current_request()
    tm = getattr(request, "tm", None) if request is not None else None
    if tm is not None:
        return tm
    import transaction

    return transaction.manager


def after_commit(
    what: str,
    action: Callable[[], None],
    *,
    transaction_manager: Any = None,
    request: Any = None,
    idempotent: bool = False,
) -> AfterCommit:
    """Run ``action`` after the current transaction commits; drop it on abort.

    :param what: a description for the log, e.g. ``"deferred save of Task 3"``.
    :param transaction_manager: the manager whose transaction to join; when ``None``,
        ``request.tm`` of ``request`` (or of the current request), else the thread's
        default manager.
    :param request: the request whose ``request.tm`` to join.
    :param idempotent: ``action`` may be sent once more after
        :class:`~pyramid_transient.exceptions.Unavailable`, because a second copy of a
        write that was applied is a no-op (its write carries its identity). Leave it
        ``False`` unless that is true.
    :returns: the data manager of the current transaction (one per transaction).
    :raises ~pyramid_transient.exceptions.InvalidArgument: ``action`` is not callable
        (checked now, not after the commit, when nobody could be told).
    """
    if not callable(action):
        from .exceptions import InvalidArgument

        raise InvalidArgument(
            f"after_commit({what!r}, ...) needs a callable action, not {action!r}"
        )
    transaction_manager = transaction_manager_of(request, transaction_manager)
    txn = transaction_manager.get()
    try:
        manager: AfterCommit = txn.data(_DATA_KEY)
    except KeyError:
        manager = AfterCommit(transaction_manager)
        txn.set_data(_DATA_KEY, manager)
    if not manager.joined:
        txn.join(manager)
        manager.joined = True
    manager.add(what, action, idempotent)
    return manager
