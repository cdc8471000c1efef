"""The token store: reading, creating and invalidating tokens, in one round trip each."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import weakref
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import Any, cast

import redis

from ..binding import Translating, send_on_one_connection
from ..connection import Binding, bind
from ..exceptions import InvalidArgument, ReplicationTimeout
from ..keys import KeySpace
from ..lua import ScriptSet
from ._backlog import backlog_of, delete, unconfirmed_in, unconfirmed_of, waiting_in
from ._identities import identities_of

log = logging.getLogger(__name__)

#: Seconds a token lives unless ``transient.cache.token_ttl`` says otherwise.
DEFAULT_TOKEN_TTL = 24 * 3600

#: The hash tag every token key carries, so that one script or one ``DEL`` may touch any
#: set of them (on a Cluster they all live in one slot).
TOKEN_TAG = "tokens"

#: The Lua that reads several tokens (or one, with retried invalidations) in one round
#: trip: ``tokens.lua`` beside this module, whose head comment lists its KEYS and ARGV.
TOKENS_SCRIPT = (resources.files(__package__ or __name__) / "tokens.lua").read_text("utf-8")

#: This package's Lua, registered once per client.
SCRIPTS = ScriptSet(tokens=TOKENS_SCRIPT)


def _sha1(data: bytes) -> bytes:
    # The digest TOKENS_SCRIPT computes with redis.sha1hex: lower-case hex, as bytes.
    return hashlib.sha1(data).hexdigest().encode("ascii")


def _text(token: Any) -> bytes:
    # A client made with decode_responses=True answers str.
    return token.encode("utf-8") if isinstance(token, str) else cast(bytes, token)


#: Clients whose server refuses ``SET NX GET`` (Redis before 7.0): they read one token
#: with the script, like several. A fact about the client's server, learnt once and
#: shared by every store on that client (stores are made per use); held weakly, as the
#: scripts registered on a client are (:class:`~pyramid_transient.lua.ScriptSet`).
_NO_SET_NX_GET: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


class _SetNxGetRefused(Exception):
    """The server answered ``SET ... NX GET`` with a syntax error (Redis before 7.0)."""


_REFUSES_SET_NX_GET = {"syntax error": _SetNxGetRefused}


class TokenStore:
    """Reads, creates and invalidates tokens in one Redis database.

    ``client`` is a ``redis.Redis`` (or ``RedisCluster``), or a
    :class:`~pyramid_transient.binding.Binding` whose client is asked for on every use
    (so a forked worker gets its own connections); ``keyspace`` the
    :class:`~pyramid_transient.keys.KeySpace` of the tokens (by default the binding's, or
    ``KeySpace("", "token")`` for a client). :func:`token_store` builds one for an app.

    ``wait_replicas`` (``transient.cache.wait_replicas``) makes every invalidation wait,
    in its round trip, until that many replicas acknowledged it (Redis ``WAIT``, at most
    ``wait_timeout`` seconds), so that a failover cannot lose it; see :meth:`invalidate`.
    """

    def __init__(
        self,
        client: redis.Redis | Binding,
        keyspace: KeySpace | None = None,
        *,
        ttl: int = DEFAULT_TOKEN_TTL,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
        socket_timeout: float | None = None,
    ) -> None:
        if isinstance(client, Binding):
            self.binding = client
        else:
            self.binding = Binding(keyspace or KeySpace("", "token"), client=client, name="cache")
        #: The keys of the tokens.
        self.keyspace = keyspace or self.binding.keyspace
        #: Seconds a new token lives.
        self.ttl = ttl
        #: Replicas an invalidation waits for; 0 for none.
        self.wait_replicas = wait_replicas
        #: Seconds an invalidation waits for them.
        self.wait_timeout = wait_timeout
        # WAIT answers at wait_timeout, which the server notices on its timer (every 100 ms
        # at hz 10): its reply may come later than the socket timeout allows for others.
        self._wait_read_timeout = wait_timeout + max(socket_timeout or 0, 0.5)
        self._tag = "{" + TOKEN_TAG + "}"
        self._base = self.keyspace.base

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` (or ``RedisCluster``) the tokens live on, resolved now."""
        return self.binding.client

    @property
    def target(self) -> Any:
        """The ``RedisManager`` the store is bound to, else its client: failed
        invalidations wait for a retry per target (see :func:`pending_invalidations`)."""
        manager = self.binding.manager
        return manager if manager is not None else self.binding.client

    def key(self, identity: str) -> str:
        """The Redis key of the token of ``identity``."""
        return f"{self._base}:{self._tag}:{identity}"

    def tokens(self, identities: Sequence[str]) -> list[bytes]:
        """The tokens of ``identities``, created where missing, in one round trip.

        Invalidations waiting for a retry on the same :attr:`target` go in the same round
        trip, before the reads. Raises :class:`~pyramid_transient.exceptions.Unavailable`
        when Redis cannot be reached, and
        :class:`~pyramid_transient.exceptions.CorruptData` when a token key holds another
        type (deleting it, as :meth:`invalidate` does, repairs it).
        """
        return cast(list[bytes], self._read(identities, digest=False))

    def digest(self, identities: Sequence[str]) -> bytes:
        """The SHA1 (hex) of the tokens of ``identities`` joined with ``,``, as
        :meth:`tokens` reads them; the same whichever way they are read."""
        return cast(bytes, self._read(identities, digest=True))

    def _read(self, identities: Sequence[str], *, digest: bool) -> Any:
        # The spine's vocabulary: Unavailable for an outage, CorruptData for a token key
        # that holds another type.
        with Translating(
            self.binding.name, self.key(identities[0]) if len(identities) == 1 else None
        ):
            return self._read_tokens(identities, digest=digest)

    def _read_tokens(self, identities: Sequence[str], *, digest: bool) -> Any:
        binding = self.binding
        manager = binding.manager
        # first: a client that cannot be built must not drop a retry
        client = binding._client if manager is None else manager.get(binding.name)
        waiting = waiting_in(client if manager is None else manager, binding.name)
        retried = waiting.take() if waiting is not None else []
        if len(identities) == 1 and not retried and client not in _NO_SET_NX_GET:
            key = f"{self._base}:{self._tag}:{identities[0]}"  # self.key(), inlined
            # One token, the common case: SET NX GET EX answers the existing token and
            # leaves it (and its time to live) alone, or sets ours with the time to live
            # and answers nil. One plain command costs the server a tenth of a script call.
            # execute_command skips set()'s argument checks.
            new = secrets.token_hex(12) + "-1"
            try:
                with Translating(binding.name, key, _REFUSES_SET_NX_GET):
                    token = client.execute_command(
                        "SET", key, new, "NX", "GET", "EX", self.ttl, get=True
                    )  # fmt: skip
            except _SetNxGetRefused:
                # Redis < 7.0 refuses NX with GET: this client reads with the script.
                _NO_SET_NX_GET[client] = True
                log.info("Redis refuses SET NX GET (before 7.0): tokens read by script")
            else:
                token = new.encode("ascii") if token is None else _text(token)
                return _sha1(token) if digest else [token]
        keys = [self.key(i) for i in identities]
        try:
            result = SCRIPTS.on(client)["tokens"](
                keys=[*retried, *keys],
                args=[
                    len(retried),
                    self.ttl,
                    secrets.token_hex(12) + "-",
                    *(("digest",) if digest else ()),
                ],
                client=client,
            )
        except Exception:
            if retried:
                backlog_of(self.target, self.binding.name).put_back(retried)
            raise
        if retried:
            backlog_of(self.target, self.binding.name).succeeded()
        if not isinstance(result, list):
            return _text(result)  # the digest
        tokens = result if not result or type(result[0]) is bytes else list(map(_text, result))
        return _sha1(b",".join(tokens)) if digest else tokens

    def invalidate(self, identities: Iterable[str]) -> bool:
        """Delete the tokens of ``identities`` in one round trip (one ``DEL``); never raises.

        Returns ``False`` when Redis could not be reached: the keys are then kept for a
        retry (logged), with the next round trip on this :attr:`target` or by a background
        timer.

        With ``wait_replicas``, the ``DEL`` is followed in the same round trip by a
        ``WAIT`` on the same connection. Fewer acknowledgements within
        ``wait_timeout`` also return ``False`` (logged at WARNING): the tokens are
        deleted on the master, and the keys are kept *unconfirmed*: sent again, each time
        with a ``WAIT``, by a background timer and with the next invalidation on this
        :attr:`target`, until enough replicas acknowledge, so that one lost in a failover
        is deleted again on the new master. Token reads leave them alone.
        """
        return self.try_invalidate(identities) is None

    def try_invalidate(self, identities: Iterable[str]) -> BaseException | None:
        """:meth:`invalidate`, returning what went wrong instead of ``False``:
        :class:`~pyramid_transient.exceptions.Unavailable` when Redis could not be
        reached, :class:`~pyramid_transient.exceptions.ReplicationTimeout` when too few
        replicas acknowledged; ``None`` when it succeeded. Never raises."""
        keys = [self.key(i) for i in identities]
        waiting = waiting_in(self.target, self.binding.name)
        if waiting is not None:
            keys = list(dict.fromkeys([*waiting.take(), *keys]))
        unconfirmed = unconfirmed_in(self.target, self.binding.name)
        if unconfirmed is not None and self.wait_replicas:
            # Sent again with this one and its WAIT: after a failover that lost them, the
            # app's next commit deletes them on the new master, without waiting for the
            # timer.
            keys = list(dict.fromkeys([*unconfirmed.take(), *keys]))
        if not keys:
            return None
        try:
            # the client too: a Cluster's is built on first use; errors in the spine's
            # vocabulary (Unavailable), as the AfterCommitFailed event carries them
            with Translating(self.binding.name, keys[0]):
                if self.wait_replicas:
                    self._resend()(self.client, keys)
                else:
                    delete(self.client, keys)
        except ReplicationTimeout as exc:
            log.warning(
                "invalidated %d cache tokens on the master, but %s; kept for retry until "
                "they do (a failover before that would serve data cached under the old "
                "tokens, until the retry reaches the new master)",
                len(keys),
                exc,
            )
            self._unconfirmed().put_back(keys)
            if waiting is not None:
                waiting.succeeded()
            return exc
        except Exception as exc:
            log.warning(
                "could not invalidate %d cache tokens (kept for retry; staleness is bounded "
                "by transient.cache.token_ttl = %ss): %s",
                len(keys),
                self.ttl,
                exc,
            )
            backlog_of(self.target, self.binding.name).put_back(keys)
            if self.wait_replicas:
                # The DEL may have been applied, unconfirmed: the timer retries it with
                # its WAIT (a read only deletes the tokens again, without one).
                self._unconfirmed().put_back(keys)
            return exc
        if waiting is not None:
            waiting.succeeded()
        if unconfirmed is not None and self.wait_replicas:
            unconfirmed.succeeded()
        return None

    def _resend(self) -> Callable[[Any, list[str]], None]:
        # DEL + WAIT as this store sends them: its invalidations, and the retries of
        # those left unconfirmed.
        return functools.partial(
            _delete_waiting,
            ack=self.key("ack"),
            replicas=self.wait_replicas,
            timeout=self.wait_timeout,
            read_timeout=self._wait_read_timeout,
            database=self.binding.name,
        )

    def _unconfirmed(self) -> Any:
        return unconfirmed_of(self.target, self.binding.name, self._resend())


def _delete_waiting(
    client: Any,
    keys: list[str],
    *,
    ack: str,
    replicas: int,
    timeout: float,
    read_timeout: float,
    database: str,
) -> None:
    """``DEL`` the token keys, then ``WAIT`` for ``replicas`` on the same connection, in
    one round trip; raise :class:`ReplicationTimeout` when fewer acknowledge.

    A ``SET`` of the short-lived ``ack`` key goes between them: a ``DEL`` that deletes
    nothing is not replicated and would leave ``WAIT`` counting replicas up to the
    connection's earlier write only, while the invalidation it repeats (a retry, or a
    commit after another's) may not have reached them yet. The ``SET`` always is, so
    ``WAIT`` counts the replicas that hold everything the master had when it ran.
    """
    wait_ms = max(1, int(timeout * 1000))
    commands: list[tuple[Any, ...]] = [
        ("DEL", *keys),
        ("SET", ack, "1", "PX", 1000),
        ("WAIT", replicas, wait_ms),
    ]
    with Translating(database, keys[0]):
        replies = send_on_one_connection(client, keys[0], commands, read_timeout=read_timeout)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    acknowledged = int(replies[-1])
    if acknowledged < replicas:
        raise ReplicationTimeout(
            f"only {acknowledged} of transient.cache.wait_replicas = {replicas} replicas "
            f"acknowledged it within transient.cache.wait_timeout = {timeout:g} s",
            wanted=replicas,
            acknowledged=acknowledged,
        )


def token_store(redis: Any, *, key_prefix: str = "", ttl: int | None = None) -> TokenStore:
    """A :class:`TokenStore` on the ``cache`` database of a ``RedisManager``, a registry
    or a request (their app's manager), ``None`` (the running app's), or a bare
    ``redis.Redis``.

    A manager's tokens take its prefix and ``transient.cache.token_ttl``, and its client is
    asked for on every use. With a bare client the keys are ``{key_prefix}:token:...``;
    pass the app's ``transient.key_prefix`` so that a worker writes the tokens the app
    reads.
    """
    binding = bind(redis, "token", "cache")
    if binding.manager is not None:
        settings = binding.manager.settings
        return TokenStore(
            binding,
            ttl=ttl or settings.cache.token_ttl,
            wait_replicas=settings.cache.wait_replicas,
            wait_timeout=settings.cache.wait_timeout,
            socket_timeout=settings.socket_timeout,
        )
    return TokenStore(binding, KeySpace(key_prefix, "token"), ttl=ttl or DEFAULT_TOKEN_TTL)


def get_token(redis: Any, instance_or_identity: Any, *, key_prefix: str = "") -> str:
    """The current token of a row or table (created if missing), as text.

    ``instance_or_identity`` is anything :func:`identities_of` accepts that names one
    token (an instance, a single-table class, a ``Table`` or an identity string). Raises
    :class:`~pyramid_transient.exceptions.Unavailable` if Redis cannot be reached.
    """
    identities = identities_of(instance_or_identity)
    if len(identities) != 1:
        raise InvalidArgument(
            f"{instance_or_identity!r} names {len(identities)} tokens; give one table or row"
        )
    store = token_store(redis, key_prefix=key_prefix)
    return store.tokens(identities)[0].decode("ascii")
