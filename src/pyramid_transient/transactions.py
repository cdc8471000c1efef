"""Work that runs only after the surrounding ``transaction`` commits.

DESIGN section 6: side effects that depend on the SQL transaction run only after a
successful commit, are dropped on abort, and are savepoint-aware (rolling a savepoint back
drops only the work recorded after it). :func:`after_commit` records a callable in a data
manager joined to the current transaction (pyramid_tm's ``request.tm``, or the thread's
default manager); the data manager runs it in ``tpc_finish``, after every other resource,
the SQL database included, has committed. Nothing there may raise into the application: a
failure is logged (a connection error is retried once first).

Used by ``flash(..., on_commit=True)`` and by models' ``save(on_commit=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

__all__ = ["AfterCommit", "after_commit"]

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
        #: ``(description, callable)`` pairs, run in order after the commit.
        self.work: list[tuple[str, Callable[[], None]]] = []
        #: Whether the transaction holds this manager. Rolling back a savepoint taken
        #: before it joined aborts it and removes it from the transaction.
        self.joined = False

    def add(self, what: str, action: Callable[[], None]) -> None:
        self.work.append((what, action))

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
        for what, action in work:
            try:
                try:
                    action()
                except redis.ConnectionError:
                    log.warning("retrying %s once after a connection error", what)
                    action()
            except Exception:
                log.exception("%s failed after the transaction committed", what)

    def tpc_abort(self, txn: Any) -> None:
        self.work.clear()

    def sortKey(self) -> str:  # the transaction package's spelling
        return SORT_KEY

    # ISavepointDataManager
    def savepoint(self) -> _Savepoint:
        return _Savepoint(self)


_DATA_KEY = object()


def after_commit(
    what: str, action: Callable[[], None], *, transaction_manager: Any = None
) -> AfterCommit:
    """Run ``action`` after the current transaction commits; drop it on abort.

    :param what: a description for the log, e.g. ``"deferred save of Task 3"``.
    :param transaction_manager: pyramid_tm's ``request.tm``; the thread's default manager
        when ``None``.
    :returns: the data manager of the current transaction (one per transaction).
    """
    if transaction_manager is None:
        import transaction

        transaction_manager = transaction.manager
    txn = transaction_manager.get()
    try:
        manager: AfterCommit = txn.data(_DATA_KEY)
    except KeyError:
        manager = AfterCommit(transaction_manager)
        txn.set_data(_DATA_KEY, manager)
    if not manager.joined:
        txn.join(manager)
        manager.joined = True
    manager.add(what, action)
    return manager
