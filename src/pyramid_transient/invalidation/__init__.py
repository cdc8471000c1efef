"""Tokens that change when SQL data changes: identities, the token store, SQLAlchemy hooks.

A *token* is a short random string kept in Redis for each row and each table the
application caches. Cache keys are built from tokens (:mod:`pyramid_transient.cache`);
when a transaction that changed a row commits, the row's token and its table's token are
deleted, the next reader creates new random ones with ``SET NX`` semantics, and every key
built from the old tokens is never computed again.

Identities name what a token belongs to:

* a row: ``r:<table>:<pk>[:<pk>...]``, see :func:`row_identity`;
* a table: ``t:<table>``, see :func:`table_identity`.

The table name is schema-qualified (``schema.table``) and every part goes through
:func:`~pyramid_transient.keys.quote` (dots in names escaped as well), so two rows or two
tables never share an identity, whatever their primary key types or names.

Every read or invalidation is one round trip, on a single server and on a Cluster alike:

* one token (a key over one instance, the common case) is one ``SET key <new> NX GET EX
  <ttl>``: it returns the existing token untouched, or sets ours, with its time to live,
  and returns nil;
* several tokens, or a read carrying retried invalidations, are one call of
  :data:`TOKENS_SCRIPT`;
* an invalidation is one ``DEL`` of every token a commit changed.

All tokens of one key prefix share the Cluster hash tag ``{tokens}``, so the script and
the ``DEL`` may name any set of them and each stays one command to one node.

Hooks: :func:`register` binds an :class:`InvalidationListener` to a SQLAlchemy session,
``scoped_session``, ``sessionmaker`` or ``Session`` class. Changes are recorded in memory
per transaction (a savepoint's own changes are dropped when it rolls back) and the
tokens are deleted after the commit, in one round trip. Nothing here raises into the
application after the database has committed: a failed invalidation is logged and kept in
a bounded in-memory backlog per manager (or bare client), retried with its next round trip
and by a background timer. What it cannot retry (a process that dies) is bounded by the
token's time to live.
"""

from __future__ import annotations

# The modules by concern: _identities (rows and tables), _tokens (the TokenStore and its
# Lua, tokens.lua), _backlog (failed invalidations, retried), _listener (the SQLAlchemy
# hooks). MAX_BACKLOG and RETRY_DELAYS are read where they are used, in _backlog.
from ._backlog import MAX_BACKLOG as MAX_BACKLOG
from ._backlog import RETRY_DELAYS as RETRY_DELAYS
from ._backlog import pending_invalidations
from ._identities import Identity, identities_of, row_identity, table_identity
from ._listener import InvalidationListener, register
from ._tokens import (
    DEFAULT_TOKEN_TTL,
    TOKENS_SCRIPT,
    TokenStore,
    get_token,
    token_store,
)
from ._tokens import SCRIPTS as SCRIPTS
from ._tokens import TOKEN_TAG as TOKEN_TAG

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "TOKENS_SCRIPT",
    "Identity",
    "InvalidationListener",
    "TokenStore",
    "get_token",
    "identities_of",
    "pending_invalidations",
    "register",
    "row_identity",
    "table_identity",
    "token_store",
]
