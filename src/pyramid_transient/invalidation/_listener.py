"""The SQLAlchemy hooks: :func:`register` and its :class:`InvalidationListener`."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from ._identities import Identity, identities_of, mapper_info, table_identity, table_info
from ._tokens import TokenStore, token_store

log = logging.getLogger(__name__)


def _current(session: Any) -> Any:
    # The transaction that owns work done now: the innermost savepoint, else the root.
    # Flush runs in an internal subtransaction; its work belongs to the enclosing one.
    return session.get_nested_transaction() or session.get_transaction()


def _owner(transaction: Any) -> Any:
    parent = transaction.parent
    while parent is not None and not parent.nested and parent.parent is not None:
        parent = parent.parent
    return parent


def _parent_rows(state: Any, *, whole: bool) -> set[Identity]:
    """The rows a flushed row points to through its many-to-one relationships, before and
    after the flush: moving a child (``book.author_id = 2`` or ``book.author = other``)
    changes the parent it left and the one it joined, as appending to a collection does.

    ``whole`` (an insert or a delete) counts the foreign keys as they are; an update only
    the ones it changed.
    """
    found: set[Identity] = set()
    for keys, parent in mapper_info(state.mapper).parents:
        old: list[Any] = []
        new: list[Any] = []
        changed = False
        for key in keys:
            added, unchanged, deleted = state.attrs[key].history
            same = unchanged[0] if unchanged else None
            new.append(added[0] if added else same)
            old.append(deleted[0] if deleted else same)
            changed = changed or bool(added or deleted)
        if changed or whole:
            for values in (old, new):
                if None not in values:
                    found.add(parent.row(values))
    return found


class InvalidationListener:
    """Records what each transaction changed and invalidates its tokens once it commits.

    Made by :func:`register`; its methods are named after the SQLAlchemy session events
    they handle. Pending changes live in memory, per session transaction: nothing is
    written to Redis before the commit, so a session elsewhere committing in between never
    sees, consumes or discards them.
    """

    #: The events bound by :func:`register`, in order.
    EVENTS = (
        "after_begin",
        "after_flush",
        "do_orm_execute",
        "after_commit",
        "after_transaction_end",
    )

    def __init__(
        self,
        target: Any,
        redis: Any = None,
        *,
        key_prefix: str = "",
        token_ttl: int | None = None,
    ) -> None:
        #: The session, sessionmaker or class the events are bound to.
        self.target = target
        self._redis = redis
        self._key_prefix = key_prefix
        self._token_ttl = token_ttl
        self._store: TokenStore | None = None
        self._pending: weakref.WeakKeyDictionary[Any, set[Identity]] = weakref.WeakKeyDictionary()
        self._early: weakref.WeakKeyDictionary[Any, set[Identity]] = weakref.WeakKeyDictionary()
        # The session each connection serves (for after_execute), and the engines whose
        # statements after_execute sees.
        self._sessions: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ where to

    def store(self) -> TokenStore:
        """The token store invalidations go to (the running app's, when none was given)."""
        if self._redis is None:
            return token_store(None, ttl=self._token_ttl)  # whichever app runs now
        if self._store is None:
            self._store = token_store(
                self._redis, key_prefix=self._key_prefix, ttl=self._token_ttl
            )
        return self._store

    # ------------------------------------------------------------------ recording

    def mark_changed(self, session: Any, *objects: Any) -> None:
        """Record changes SQLAlchemy cannot see (raw SQL): instances, classes, tables,
        identities. They are invalidated when the current transaction commits."""
        found: set[Identity] = set()
        for obj in objects:
            if isinstance(obj, str):
                found.add(Identity(obj))
                continue
            found.update(self._changed_identities(obj))
        self._record(session, found)

    def _record(self, session: Any, identities: Iterable[Identity]) -> None:
        transaction = _current(session)
        with self._lock:
            if transaction is None:
                # A statement that begins the transaction runs its event before the
                # transaction exists; after_begin hands these to it.
                self._early.setdefault(session, set()).update(identities)
                return
            pending = self._pending.get(transaction)
            if pending is None:
                pending = self._pending[transaction] = set()
            pending.update(identities)

    @staticmethod
    def _changed_identities(obj: Any) -> tuple[Identity, ...]:
        from sqlalchemy import inspect

        insp = inspect(obj, raiseerr=False)
        if insp is not None and not getattr(insp, "is_mapper", True):
            info = mapper_info(insp.mapper)
            found = list(info.tables)
            if insp.key is not None:
                found.append(info.row(insp.key[1]))
            pk = insp.mapper.primary_key_from_instance(obj)
            if None not in pk:
                found.append(info.row(pk))
            return tuple(found)
        return identities_of(obj)

    # ------------------------------------------------------------------ events

    def after_flush(self, session: Any, flush_context: Any) -> None:
        """Record the rows and tables written by a flush (into the current savepoint)."""
        found: set[Identity] = set()
        for state, (is_delete, list_only) in list(flush_context.states.items()):
            if list_only:
                continue
            obj = state.obj()
            if obj is None:
                continue
            if not is_delete and state.key is not None and not session.is_modified(obj):
                continue  # in the flush for bookkeeping only: no row written
            found.update(self._changed_identities(obj))
            found.update(_parent_rows(state, whole=is_delete or state.key is None))
        if found:
            self._record(session, found)

    def do_orm_execute(self, orm_execute_state: Any) -> None:
        """Record the tables (and rows named by primary key) of bulk INSERT/UPDATE/DELETE."""
        state = orm_execute_state
        if not (state.is_update or state.is_delete or state.is_insert):
            return
        found: set[Identity] = set()
        mapper = state.bind_mapper
        if mapper is not None:
            info = mapper_info(mapper)
            found.update(info.tables)
            params = state.parameters
            if isinstance(params, list):
                # Bulk by primary key: the parameters are named after the attributes,
                # which may differ from the columns' names.
                keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
                for row in params:
                    if isinstance(row, dict) and all(k in row for k in keys):
                        found.add(info.row([row[k] for k in keys]))
        table = getattr(state.statement, "table", None)
        if isinstance(getattr(table, "name", None), str):
            found.add(table_identity(table))
        self._record(state.session, found)

    def after_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        """Hand what a transaction's first statement recorded to that transaction, and
        watch the statements of its connection (see :meth:`after_execute`)."""
        from sqlalchemy import event

        engine = connection.engine
        with self._lock:
            early = self._early.pop(session, None)
            self._sessions[connection] = weakref.ref(session)
            hook = engine not in self._engines
            if hook:
                self._engines.add(engine)
        if hook:
            event.listen(engine, "after_execute", self.after_execute)
        if early:
            self._record(session, early)

    def after_execute(
        self,
        connection: Any,
        statement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
        result: Any,
    ) -> None:
        """Record the table (and the rows named by primary key) of an INSERT, UPDATE or
        DELETE sent on a session's connection where the ORM events do not see it: the
        legacy ``bulk_insert_mappings``, ``bulk_update_mappings`` and ``bulk_save_objects``,
        and Core statements run through ``session.connection()``. (An engine event: the
        flush's own statements pass here too and change nothing more.)"""
        if not getattr(statement, "is_dml", False):
            return
        ref = self._sessions.get(connection)
        session = ref() if ref is not None else None
        table: Any = getattr(statement, "table", None)
        if session is None or not isinstance(getattr(table, "name", None), str):
            return
        info = table_info(table)
        found = {info.identity}
        if not statement.is_insert and info.pk:
            # By primary key (bulk_update_mappings binds it as "<table>_<column>").
            for row in multiparams or [params]:
                if isinstance(row, dict):
                    values = [row.get(label, row.get(key)) for label, key in info.pk]
                    if None not in values:
                        found.add(info.row(values))
        self._record(session, found)

    def after_commit(self, session: Any) -> None:
        """A savepoint's release hands its changes to its parent; the root's commit
        invalidates every change in one round trip. Never raises."""
        transaction = _current(session)
        if transaction is None:
            return
        with self._lock:
            pending = self._pending.pop(transaction, None)
            if pending and transaction.nested:
                owner = _owner(transaction)
                if owner is not None:
                    self._pending.setdefault(owner, set()).update(pending)
                return
        if not pending or transaction.nested:
            return
        try:
            error = self.store().try_invalidate(pending)
        except Exception:  # the database has committed: log, never raise into the app
            log.exception("could not invalidate %d cache tokens after a commit", len(pending))
            return
        if error is not None:
            # Logged and kept for retry by the store; announced, as other work after the
            # commit is, for an app that tells the user or monitors it.
            from ..transactions import AfterCommitFailed

            AfterCommitFailed.announce(f"invalidation of {len(pending)} cache tokens", error)

    def after_transaction_end(self, session: Any, transaction: Any) -> None:
        """Whatever a transaction still holds when it ends was not committed: drop it."""
        with self._lock:
            self._pending.pop(transaction, None)

    def pending(self, session: Any) -> frozenset[Identity]:
        """The identities recorded so far in the session's current transaction (or savepoint)."""
        transaction = _current(session)
        with self._lock:
            return frozenset(self._pending.get(transaction, ())) if transaction else frozenset()

    # ------------------------------------------------------------------ binding

    def listen(self) -> None:
        from sqlalchemy import event

        for name in self.EVENTS:
            event.listen(self.target, name, getattr(self, name))

    def remove(self) -> None:
        """Unbind the events."""
        from sqlalchemy import event

        for name in self.EVENTS:
            if event.contains(self.target, name, getattr(self, name)):
                event.remove(self.target, name, getattr(self, name))
        with self._lock:
            engines = list(self._engines)
            self._engines = weakref.WeakSet()
        for engine in engines:
            if event.contains(engine, "after_execute", self.after_execute):
                event.remove(engine, "after_execute", self.after_execute)
        with _REGISTERED_LOCK:
            if _REGISTERED.get(id(self.target)) is self:
                del _REGISTERED[id(self.target)]


# The listener of each target, to replace it on a second register(). Module-level: the
# target is the application's object (a session, a sessionmaker, a class), with no place of
# ours on it, and register() is a plain function. Held weakly: SQLAlchemy
# keeps a listener alive as long as its target, and a session registered per request
# (as with zope.sqlalchemy) must not be kept alive, with its identity map, by this table.
_REGISTERED: weakref.WeakValueDictionary[int, InvalidationListener] = weakref.WeakValueDictionary()
_REGISTERED_LOCK = threading.Lock()


#: What :func:`register` binds to, for messages.
ACCEPTED_TARGETS = "a sessionmaker, a scoped_session, a Session subclass or a Session"


def hookable(target: Any) -> bool:
    """Whether SQLAlchemy's session events can be bound to ``target``: a ``sessionmaker``,
    a ``scoped_session``, a ``Session`` subclass or a ``Session``."""
    from sqlalchemy.orm import Session, scoped_session, sessionmaker

    if isinstance(target, sessionmaker | scoped_session | Session):
        return True
    return isinstance(target, type) and issubclass(target, Session)


def register(
    session_or_sessionmaker: Any,
    redis: Any = None,
    *,
    key_prefix: str = "",
    token_ttl: int | None = None,
) -> InvalidationListener:
    """Bind the invalidation hooks to a session, ``scoped_session``, ``sessionmaker`` or
    ``Session`` class, and return the :class:`InvalidationListener`.

    ``redis`` is where invalidations go: a ``redis.Redis`` (keys under ``key_prefix``, as
    in scripts, workers and tests), a
    :class:`~pyramid_transient.connection.RedisManager` or a registry (its ``cache``
    database, asked for at each commit); ``None`` means the running app's manager at
    commit time. Registering a target again replaces its previous listener.

    Raises :class:`~pyramid_transient.exceptions.InvalidArgument` for anything else, such
    as the starter's ``get_session_factory`` function instead of the sessionmaker it
    returns.
    """
    if not hookable(session_or_sessionmaker):
        from ..exceptions import InvalidArgument

        hint = ""
        if callable(session_or_sessionmaker) and not isinstance(session_or_sessionmaker, type):
            hint = " (a function: pass the sessionmaker it returns)"
        raise InvalidArgument(
            f"register() binds to {ACCEPTED_TARGETS}, not {session_or_sessionmaker!r}{hint}"
        )
    with _REGISTERED_LOCK:
        previous = _REGISTERED.get(id(session_or_sessionmaker))
    if previous is not None and previous.target is session_or_sessionmaker:
        previous.remove()
    listener = InvalidationListener(
        session_or_sessionmaker, redis, key_prefix=key_prefix, token_ttl=token_ttl
    )
    listener.listen()
    with _REGISTERED_LOCK:
        _REGISTERED[id(session_or_sessionmaker)] = listener
    return listener
