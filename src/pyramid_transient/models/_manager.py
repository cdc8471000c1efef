"""``Model.objects``: the queries and writes of a model class, apart from its fields.

As Django's ``Model.objects``, the manager keeps ``filter``, ``get``, ``count`` and the rest
off the class's namespace, so a field may be called ``count``, ``get`` or ``filter``.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from ..binding import Binding, bind
from ..exceptions import ConflictError, CorruptData, FullScanRefused, MultipleFound, ObjectNotFound
from ..keys import quote
from ..transactions import after_commit
from . import _keys as _keys_module
from ._encoding import _BOOL, _STR, LOOKUPS, _Cond, _expire_ms, _Index, _lex, _score, _score_text
from ._keys import _Keys, _Meta
from ._scripts import SCRIPTS

if TYPE_CHECKING:
    from ._model import RedisModel

log = logging.getLogger("pyramid_transient.models")

__all__ = ["PURGE_BATCH", "SCAN_BATCH", "Manager"]

#: Objects each unindexed page (``all()``, ``exclude()``, unindexed ``filter()``) loads.
SCAN_BATCH = 500
#: Expired objects each save cleans up, so the hash layout never accumulates dead objects.
PURGE_BATCH = 16
#: Capability name in keys (``{prefix}:model:...``) and the named database used.
CAPABILITY = "model"
DATABASE = "models"

M = TypeVar("M", bound="RedisModel")


def _defer(what: str, action: Callable[[], None]) -> None:
    """Run ``action`` after the commit of pyramid_tm's ``request.tm`` inside a request,
    else of the thread's current ``transaction``. It is idempotent (a deferred save carries
    its write identity; a deferred delete re-sent finds the object gone), so it is sent
    once more if Redis could not be reached."""
    from pyramid.threadlocal import get_current_request

    # request.tm is pyramid_tm's manager (tm.manager_hook may make it other than the
    # thread's default); a request without pyramid_tm has no such attribute.
    tm = getattr(get_current_request(), "tm", None)
    after_commit(what, action, transaction_manager=tm, idempotent=True)


class Manager(Generic[M]):
    """The queries and writes of one model class: ``Task.objects``.

    One per class (a subclass has its own). Every method is also reachable when a field
    shadows an instance shortcut: ``Task.objects.save(obj)`` is ``obj.save()``.
    """

    __slots__ = ("model",)

    def __init__(self, model: type[M]) -> None:
        #: The model class.
        self.model = model

    def __repr__(self) -> str:
        return f"<Manager of {self.model.__qualname__}>"

    @property
    def _meta(self) -> _Meta:
        return self.model.__transient_meta__

    @property
    def _name(self) -> str:
        return self.model.__name__

    # ------------------------------------------------------------------ binding

    def bind(self, target: Any) -> None:
        """Use ``target`` for this class and its subclasses, instead of the running app's
        manager.

        ``target`` is a :class:`~pyramid_transient.connection.RedisManager`, a Pyramid
        registry or request (its app's manager), or a bare ``redis.Redis`` /
        ``RedisCluster``. A manager gives its ``models`` database and key prefix, asking
        for the client on every use (so a forked worker gets its own connections); a bare
        client gets keys without a prefix (``model:...``).
        """
        self._meta.binding = bind(target, CAPABILITY, DATABASE)

    def unbind(self) -> None:
        """Forget what :meth:`bind` gave this class (back to the running app's manager)."""
        self._meta.binding = None

    def _keys(self) -> _Keys:
        binding: Binding | None = None
        for klass in self.model.__mro__:
            meta = klass.__dict__.get("__transient_meta__")
            if meta is not None and meta.binding is not None:
                binding = meta.binding
                break
        if binding is None:  # the running app's, found now (never cached: apps differ)
            binding = bind(None, CAPABILITY, DATABASE)
        meta = self._meta
        ks, tag = binding.keyspace, meta.storage_name
        names = meta.names.get(ks)
        if names is None:
            names = meta.names[ks] = (
                ks.tagged(tag, "all"),
                ks.tagged(tag, "meta"),
                ks.tagged(tag, "data"),
                tuple(ks.tagged(tag, "idx", i.field) for i in meta.indexes),
            )
        return _Keys(binding, binding.client, *names, keyspace=ks, tag=tag)

    def _call(self, keys: _Keys, name: str, data_key: str, extra_keys: Sequence[str],
              args: Sequence[Any]) -> tuple[Any, list[str]]:  # fmt: skip
        """Run script ``name``: its result, and the index keys of the wrong type it met
        (left alone). Keys of the wrong type it deleted are logged here."""
        meta = self._meta
        all_keys = [keys.all, keys.meta, data_key, *keys.indexes, *extra_keys]
        head = ["h" if meta.layout == "hash" else "k", len(meta.indexes)]
        head.extend(i.field for i in meta.indexes)
        repaired, result, broken = keys.binding.run(
            SCRIPTS, name, all_keys, [*head, *args], client=keys.client
        )
        for key in repaired:
            log.warning(
                "Redis key %r of %s did not hold what models write there: deleted (its "
                "objects read as missing until saved again)",
                key.decode(errors="replace"), self._name,
            )  # fmt: skip
        return result, [k.decode(errors="replace") for k in broken]

    def _run(self, keys: _Keys, name: str, data_key: str, extra_keys: Sequence[str],
             args: Sequence[Any]) -> Any:  # fmt: skip
        return self._call(keys, name, data_key, extra_keys, args)[0]

    def _broken_index(self, key: str) -> CorruptData:
        return CorruptData(
            f"Redis key {key!r}, an index of {self._name}, holds a value of the wrong type "
            "(filters through it are refused until the indexes are rebuilt)",
            key=key,
            database=DATABASE,
            repair=f"{self._name}.objects.rebuild_indexes()",
        )

    # ------------------------------------------------------------------ keys

    def key_of(self, obj: M) -> str:
        """The primary key of ``obj`` as it appears in Redis keys (what :meth:`get`
        accepts). A generated key is made here, at first use."""
        meta = self._meta
        if meta.pk_fields:
            values = [obj.__dict__[f] for f in meta.pk_fields]
            if values[0] is None and meta.generated_id is not None:
                values = [self._new_id()]
                setattr(obj, "id", values[0])  # noqa: B010 (a field, unknown to the base)
                obj._id_generated = True
            elif meta.pk_fields == ("id",) and values[0] is None:
                raise ValueError(
                    f"{self._name}.id is None: set it, or remove the id field to get "
                    "generated keys"
                )
            return self._pk_text(values)
        if obj._pk is None:
            obj._pk = _keys_module._new_text_id()
        return obj._pk

    def _new_id(self) -> str | int:
        """A value for an optional ``id`` left at None: text ids are random, int ids come
        from the class's counter in Redis, a block at a time."""
        meta = self._meta
        if meta.generated_id is str:
            return _keys_module._new_text_id()
        keys = self._keys()
        return meta.id_blocks.take(keys.ids, lambda n: self._reserve_ids(keys, n))

    def _reserve_ids(self, keys: _Keys, n: int, *, skip_ahead: bool = False) -> int:
        """Add ``n`` to the class's id counter; return its new value. ``skip_ahead``: move
        the counter past every id it could have handed out first (a generated id was found
        taken: the counter was set back)."""
        counter = keys.ids
        args = [n, "1" if skip_ahead else ""]
        end, repaired = keys.binding.run(SCRIPTS, "ids", [counter], args, client=keys.client)
        if repaired:
            log.warning(
                "Redis key %r, the id counter of %s, did not hold an integer: reset past "
                "every id it could have handed out",
                counter, self._name,
            )  # fmt: skip
        return int(end)

    def _pk_text(self, values: Sequence[Any]) -> str:
        meta = self._meta
        parts = []
        for field, value, as_json in zip(meta.pk_fields, values, meta.pk_json, strict=True):
            if value is None:
                parts.append("%")  # quote() never makes a lone "%": no value's text is this
                continue
            plain = meta.adapters[field].dump_python(value, mode="json")
            if isinstance(plain, str) and not as_json:
                text = plain
            else:
                text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
            parts.append(quote(text))
        return ":".join(parts)

    def _coerce_pk(self, pk: Any) -> str:
        meta = self._meta
        if not meta.pk_fields:
            if not isinstance(pk, str):
                raise ValueError(
                    f"{self._name} has generated keys: give {self._name}.objects.key_of(obj) "
                    f"(a str), not {pk!r}"
                )
            return pk
        values: list[Any] | None
        if isinstance(pk, Mapping):
            values = [pk[f] for f in meta.pk_fields] if set(pk) >= set(meta.pk_fields) else None
        elif len(meta.pk_fields) > 1:
            ok = isinstance(pk, list | tuple) and len(pk) == len(meta.pk_fields)
            values = list(pk) if ok else None
        else:
            values = [pk]
        if values is None:
            raise ValueError(
                f"{self._name}'s primary key is {', '.join(meta.pk_fields)}: give a tuple or "
                f"a dict of those values, not {pk!r}"
            )
        coerced = [self._coerce(f, v, "eq") for f, v in zip(meta.pk_fields, values, strict=True)]
        return self._pk_text(coerced)

    # ------------------------------------------------------------------ encoding

    def _index_args(self, obj: M, pk: str) -> list[Any]:
        args: list[Any] = []
        for idx in self._meta.indexes:
            value = obj.__dict__[idx.field]
            if value is None:
                continue
            if idx.kind == "score":
                # NaN has no place in an order: it is indexed at +inf, so that isnull=False
                # finds it, and every comparison with it is false once the object is loaded.
                score = _score(value)
                args += [idx.field, pk, _score_text(float("inf") if score is None else score)]
            else:
                args += [idx.field, _lex(value) + b"\x00" + pk.encode(), 0]
        return args

    def _load(self, pk: str, version: Any, data: bytes | None, key: str) -> M | None:
        """The object stored as ``data``, or None (with a WARNING naming ``key``) when it
        does not decode: a bad value reads as missing, and the next save replaces it."""
        if not data:
            return None
        try:
            obj = self.model.model_validate_json(data)
        except ValidationError as exc:
            log.warning(
                "Redis key %r: stored %s %r does not validate (%d errors); read as missing",
                key, self._name, pk, exc.error_count(),
            )  # fmt: skip
            return None
        if not self._meta.pk_fields:
            obj._pk = pk
        obj._version = int(version)
        return obj

    # ------------------------------------------------------------------ writes

    def save(
        self,
        obj: M,
        *,
        if_unmodified: bool | None = None,
        on_commit: bool = False,
        expire: float | Literal["default"] | None = "default",
    ) -> M:
        """Write ``obj`` and its index entries (one round trip); return it.

        ``if_unmodified`` (default ``__optimistic__``): refuse with
        :class:`~pyramid_transient.exceptions.ConflictError` if someone wrote or deleted the
        object since it was read (for an object never read: if it exists). ``on_commit``:
        write only when the current transaction commits (pyramid_tm's ``request.tm`` inside
        a request, else the thread's; dropped on abort or a rolled-back savepoint).
        ``expire``: seconds, overriding ``__expire__`` for this save.
        """
        meta = self._meta
        ttl = meta.expire_ms if expire == "default" else _expire_ms(self._name, expire)
        pk = self.key_of(obj)  # first: a generated id must be in the payload
        payload = obj.model_dump_json()
        check = meta.optimistic if if_unmodified is None else if_unmodified
        retry_id = False
        if obj._id_generated and obj._version == 0:
            check = True  # "must not exist yet": a generated id never overwrites
            retry_id = meta.generated_id is int and not on_commit
        index_args = self._index_args(obj, pk)
        requested_on = obj._version  # the version the payload was built on
        # A deferred save may be sent twice (a reply lost after the commit): its identity,
        # kept in the object's record, makes the copy a no-op.
        write_id = secrets.token_hex(8) if on_commit else ""

        def write() -> None:
            keys = self._keys()
            data_key = keys.data if meta.layout == "hash" else keys.obj(pk)
            base = obj._deferred_base(requested_on) if on_commit else requested_on
            expected = str(base) if check else ""
            args = [pk, payload, "" if ttl is None else ttl, expected, PURGE_BATCH, write_id]
            args += index_args
            ok, version = self._run(keys, "save", data_key, (), args)
            if not ok and retry_id:
                # A generated int id already taken: the counter was set back (a restored
                # or damaged key). Skip it ahead, drop this process's block, draw again.
                log.warning(
                    "Redis key %r: generated id %r of %s was taken; counter moved ahead",
                    keys.ids, pk, self._name,
                )  # fmt: skip
                meta.id_blocks.forget(keys.ids)
                self._reserve_ids(keys, 0, skip_ahead=True)
                setattr(obj, "id", None)  # noqa: B010 (a field, unknown to the base)
                obj._id_generated = False
                self.save(obj, if_unmodified=if_unmodified, expire=expire)
                return
            if not ok:
                raise ConflictError(
                    f"{self._name} {pk!r} was changed since it was read (version "
                    f"{base}, now {version}); reload it and try again"
                )
            if on_commit:
                obj._deferred_moves[base] = int(version)
            obj._version = int(version)

        if on_commit:
            _defer(f"deferred save of {self._name} {pk!r}", write)
        else:
            write()
        return obj

    def delete(
        self, obj: M, *, if_unmodified: bool | None = None, on_commit: bool = False
    ) -> bool | None:
        """Delete ``obj`` (one round trip); return whether it existed.

        ``if_unmodified`` and ``on_commit`` as for :meth:`save`; a deferred delete returns
        None (the outcome is known only at the commit).
        """
        meta = self._meta
        check = meta.optimistic if if_unmodified is None else if_unmodified
        pk = self.key_of(obj)
        result: list[bool] = [False]
        requested_on = obj._version
        sent = [0]

        def remove() -> None:
            keys = self._keys()
            extra = [keys.obj(pk)] if meta.layout == "key" else []
            base = obj._deferred_base(requested_on) if on_commit else requested_on
            args = ["check", pk, base] if check else ["", pk, ""]
            sent[0] += 1
            ok, n = self._run(keys, "delete", keys.data, extra, args)
            if not ok and sent[0] > 1 and int(n) == 0:
                ok = True  # re-sent after a lost reply: the first copy deleted it
            if not ok:
                raise ConflictError(
                    f"{self._name} {pk!r} was changed since it was read (version "
                    f"{base}, now {n}); reload it and try again"
                )
            obj._version = 0
            result[0] = bool(n)

        if on_commit:
            _defer(f"deferred delete of {self._name} {pk!r}", remove)
            return None
        remove()
        return result[0]

    def refresh(self, obj: M) -> M:
        """Reload the fields of ``obj`` from Redis;
        :class:`~pyramid_transient.exceptions.ObjectNotFound` if it is gone."""
        pk = self.key_of(obj)
        fresh = self._get_pk(pk)
        if fresh is None:
            raise ObjectNotFound(f"{self._name} {pk!r} does not exist (any more)")
        obj.__dict__.update(fresh.__dict__)
        object.__setattr__(obj, "__pydantic_fields_set__", set(fresh.model_fields_set))
        obj._version = fresh._version
        return obj

    # ------------------------------------------------------------------ reads

    def _get_pk(self, pk: str) -> M | None:
        keys = self._keys()
        data_key = keys.data if self._meta.layout == "hash" else keys.obj(pk)
        reply = self._run(keys, "get", data_key, (), [pk])
        if reply is None:
            return None
        if len(reply) == 3:  # the object's key holds another type: read as missing
            log.warning(
                "Redis key %r: stored %s %r is a %s, not a string; read as missing",
                data_key, self._name, pk, reply[2].decode(),
            )  # fmt: skip
            return None
        return self._load(pk, reply[1], reply[0], data_key)

    def get(self, pk: Any) -> M:
        """The object with primary key ``pk`` (one round trip);
        :class:`~pyramid_transient.exceptions.ObjectNotFound` if none.

        ``pk`` is the ``id`` value, a tuple (or dict) of the ``__unique_together__`` values,
        or the generated :meth:`key_of`; values are coerced to the fields' types.
        """
        text = self._coerce_pk(pk)
        obj = self._get_pk(text)
        if obj is None:
            raise ObjectNotFound(f"no {self._name} has primary key {pk!r}")
        return obj

    match_for_pk = get

    def match(self, **lookups: Any) -> M:
        """The one object matching every lookup, the primary key included.

        With the primary key (``pk=...``, when no field is called ``pk``, or every key
        field) it costs one round trip; otherwise as :meth:`filter`. Raises
        :class:`~pyramid_transient.exceptions.ObjectNotFound` or
        :class:`~pyramid_transient.exceptions.MultipleFound`.
        """
        meta = self._meta
        pk_value: Any = None
        rest = dict(lookups)
        if "pk" in rest and "pk" not in self.model.model_fields:
            pk_value = self._coerce_pk(rest.pop("pk"))
        elif meta.pk_fields and all(f in lookups for f in meta.pk_fields):
            values = [self._coerce(f, lookups[f], "eq") for f in meta.pk_fields]
            if not (meta.pk_fields == ("id",) and values[0] is None):
                pk_value = self._pk_text(values)
        if pk_value is None:
            return self.match_for_values(**lookups)
        conds = self._parse(rest)
        obj = self._get_pk(pk_value)
        if obj is None or not all(c.test(obj) for c in conds):
            raise ObjectNotFound(f"no {self._name} matches {lookups!r}")
        return obj

    def match_for_values(self, **lookups: Any) -> M:
        """The one object :meth:`filter` finds;
        :class:`~pyramid_transient.exceptions.ObjectNotFound` or
        :class:`~pyramid_transient.exceptions.MultipleFound`."""
        found = self.filter(**lookups)
        if not found:
            raise ObjectNotFound(f"no {self._name} matches {lookups!r}")
        if len(found) > 1:
            raise MultipleFound(f"{len(found)} {self._name} objects match {lookups!r}")
        return found[0]

    def filter(self, **lookups: Any) -> list[M]:
        """Every object matching all lookups (``field=v``, ``field__gte=v``, ...).

        With a lookup an index can serve: at most two round trips (one in the hash layout),
        cost proportional to the entries of the most selective indexed lookup. Otherwise the
        class's own objects are iterated in batches of :data:`SCAN_BATCH`.
        """
        conds = self._parse(lookups)
        if any(c.op == "in" and not c.value for c in conds):
            return []
        meta = self._meta
        indexed = []
        for cond in conds:
            idx = meta.index_by_field.get(cond.field)
            ranges = cond.ranges(idx.kind) if idx is not None else None
            if idx is not None and ranges is not None:
                indexed.append((idx, ranges))
        if indexed:
            found: Iterable[M] = self._find(indexed)
        else:
            self._refuse_scan(lookups)
            found = self._scan()
        return [obj for obj in found if all(c.test(obj) for c in conds)]

    def exclude(self, **lookups: Any) -> list[M]:
        """Every object that does not match all lookups (iterates every object)."""
        conds = self._parse(lookups)
        self._refuse_scan(lookups)
        return [obj for obj in self._scan() if not all(c.test(obj) for c in conds)]

    def all(self) -> list[M]:
        """Every live object of the class, loaded in batches of :data:`SCAN_BATCH`."""
        return list(self._scan())

    def iterate(self) -> Iterator[M]:
        """Like :meth:`all`, one batch in memory at a time."""
        return self._scan()

    def count(self, **lookups: Any) -> int:
        """How many live objects match (all of them: one round trip)."""
        if lookups:
            return len(self.filter(**lookups))
        keys = self._keys()
        prefix = keys.obj("") if self._meta.layout == "key" else ""
        return int(self._run(keys, "count", keys.data, (), [prefix]))

    def delete_all(self) -> int:
        """Delete every object of the class; return how many were alive."""
        keys = self._keys()
        deleted = 0
        if self._meta.layout == "key":
            while True:
                with keys.binding.errors(keys.all):
                    raw = keys.client.zrange(keys.all, 0, SCAN_BATCH - 1)
                if not raw:
                    break
                pks = [pk for pk in map(self._pk_of, raw) if pk is not None]
                if len(pks) < len(raw):  # not ours (no key of ours could be built for them)
                    with keys.binding.errors(keys.all):
                        keys.client.zrem(keys.all, *(p for p in raw if self._pk_of(p) is None))
                if pks:
                    deleted += self._delete_pks(keys, [(pk, "") for pk in pks])
        return deleted + int(self._run(keys, "clear", keys.data, (), []))

    def rebuild_indexes(self) -> int:
        """Delete the class's index keys and index every live object again (one round trip
        per :data:`SCAN_BATCH` objects); return how many were indexed. The repair of an
        index key damaged outside the library
        (:class:`~pyramid_transient.exceptions.CorruptData` names it)."""
        keys = self._keys()
        if keys.indexes:
            with keys.binding.errors():
                keys.client.delete(*keys.indexes)
        batch: list[Any] = []
        total = 0
        for obj in self._scan():
            pk = self.key_of(obj)
            entries = self._index_args(obj, pk)
            batch += [pk, len(entries) // 3, *entries]
            if len(batch) >= 3 * SCAN_BATCH:
                total += int(self._run(keys, "reindex", keys.data, (), batch))
                batch = []
        if batch:
            total += int(self._run(keys, "reindex", keys.data, (), batch))
        return total

    def delete_filter(self, **lookups: Any) -> int:
        """Delete every object :meth:`filter` finds (one more round trip per
        :data:`SCAN_BATCH` of them); return how many.

        An object written by someone else between the filter and the delete is left alone:
        it may no longer match.
        """
        found = self.filter(**lookups)
        if not found:
            return 0
        keys = self._keys()
        total = 0
        for start in range(0, len(found), SCAN_BATCH):
            batch = found[start : start + SCAN_BATCH]
            pairs = [(self.key_of(o), o._version) for o in batch]
            total += self._delete_pks(keys, pairs, "skip")
        return total

    def _delete_pks(self, keys: _Keys, pks: Sequence[tuple[str, Any]], mode: str = "") -> int:
        """Delete ``(pk, version read)`` pairs; ``mode`` as the delete script's."""
        extra = [keys.obj(pk) for pk, _ in pks] if self._meta.layout == "key" else []
        args: list[Any] = [mode]
        for pk, version in pks:
            args += [pk, version]
        _ok, n = self._run(keys, "delete", keys.data, extra, args)
        return int(n)

    # ------------------------------------------------------------------ internals

    def _refuse_scan(self, lookups: Mapping[str, Any]) -> None:
        if self._meta.strict:
            indexed = ", ".join(self._meta.index_by_field) or "none"
            raise FullScanRefused(
                f"{self._name} is strict and no index serves {sorted(lookups)!r} "
                f"(indexed fields: {indexed}); add an indexed lookup or index the field"
            )

    def _parse(self, lookups: Mapping[str, Any]) -> list[_Cond]:
        conds = []
        fields = self.model.model_fields
        for name, value in lookups.items():
            field, _, op = name.partition("__")
            op = op or "eq"
            if field not in fields:
                raise ValueError(
                    f"{self._name} has no field {field!r} (lookup {name!r}); fields are "
                    f"{', '.join(fields)}"
                )
            if op not in LOOKUPS:
                raise ValueError(
                    f"{name!r}: unknown lookup {op!r}; accepted: "
                    + ", ".join(f"__{o}" for o in LOOKUPS if o != "eq")
                )
            conds.append(_Cond(field, op, self._coerce(field, value, op)))
        return conds

    def _coerce(self, field: str, value: Any, op: str) -> Any:
        annotation = self.model.model_fields[field].annotation
        meta = self._meta
        try:
            if op == "isnull":
                return _BOOL.validate_python(value)
            if op == "in":
                if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                    raise ValueError("expected a list, tuple or set of values")
                adapter = meta.value_adapters[field]
                return [None if v is None else adapter.validate_python(v) for v in value]
            if value is None:
                return None
            if op == "startswith":
                return _STR.validate_python(value)
            if op == "contains":
                item = meta.item_adapters[field]
                return value if item is None else item.validate_python(value)
            return meta.value_adapters[field].validate_python(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValueError(
                f"{self._name}.{field}__{op}: {value!r} is not a valid value for a field "
                f"of type {annotation!r} ({str(exc).splitlines()[-1].strip()})"
            ) from None

    def _find(self, indexed: list[tuple[_Index, list[tuple[Any, Any]]]]) -> list[M]:
        keys = self._keys()
        args: list[Any] = ["d" if self._meta.layout == "hash" else "p", len(indexed)]
        for idx, ranges in indexed:
            args += [idx.field, "s" if idx.kind == "score" else "l", len(ranges)]
            for lo, hi in ranges:
                args += [lo, hi]
        reply, broken = self._call(keys, "find", keys.data, (), args)
        if reply is None:
            raise self._broken_index(broken[0])
        return self._collect(keys, reply)

    def _collect(self, keys: _Keys, reply: list[Any]) -> list[M]:
        out: list[M] = []
        if self._meta.layout == "hash":
            for i in range(0, len(reply), 3):
                pk = self._pk_of(reply[i], keys.all)
                obj = pk and self._load(pk, reply[i + 1], reply[i + 2], keys.data)
                if obj:
                    out.append(obj)
            return out
        listed = [(self._pk_of(reply[i], keys.all), reply[i + 1]) for i in range(0, len(reply), 2)]
        found = [(pk, version) for pk, version in listed if pk is not None]
        if not found:
            return out
        with keys.binding.errors():
            datas = keys.client.mget([keys.obj(pk) for pk, _ in found])
        for (pk, version), data in zip(found, datas, strict=True):
            obj = self._load(pk, version, data, keys.obj(pk))
            if obj is not None:
                out.append(obj)
        return out

    def _pk_of(self, raw: bytes, listed_in: str | None = None) -> str | None:
        """The primary key ``raw`` as text, or None for bytes that are not UTF-8 (no key
        of ours: read as missing, with a WARNING naming the key listing it)."""
        try:
            return raw.decode()
        except UnicodeDecodeError:
            if listed_in is not None:
                log.warning(
                    "Redis key %r lists %r, which is no primary key of %s; skipped",
                    listed_in, raw, self._name,
                )  # fmt: skip
            return None

    def _scan(self) -> Iterator[M]:
        keys = self._keys()
        mode = "d" if self._meta.layout == "hash" else "p"
        cursor: Any = 0
        seen: set[str] = set()
        while True:
            reply = self._run(keys, "scan", keys.data, (), [cursor, SCAN_BATCH, mode])
            cursor = int(reply[0])
            for obj in self._collect(keys, reply[1:]):
                pk = self.key_of(obj)
                if pk not in seen:  # ZSCAN may return an element twice
                    seen.add(pk)
                    yield obj
            if cursor == 0:
                return
