"""The model class: pydantic fields, class options, and the instance shortcuts."""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar, cast, overload

from pydantic import BaseModel, ConfigDict, PrivateAttr, TypeAdapter
from pydantic._internal._model_construction import ModelMetaclass

from ._encoding import (
    _expire_ms,
    _generated_id_type,
    _Index,
    _index_kind,
    _item_annotation,
    _strip,
)
from ._keys import _Meta
from ._manager import Manager

__all__ = ["RESERVED", "RedisModel"]

M = TypeVar("M", bound="RedisModel")

#: Names a field of a model may not take: the manager, and pydantic's own.
RESERVED = frozenset({"objects"})

#: Class-level query names of earlier releases, served (with a DeprecationWarning naming
#: the replacement) by ``Model.objects`` when no field of the class takes the name.
DEPRECATED_CLASS_NAMES = frozenset(
    {
        "bind", "unbind", "get", "match_for_pk", "match", "match_for_values", "filter",
        "exclude", "all", "iterate", "count", "delete_all", "delete_filter",
    }
)  # fmt: skip


def _pydantic_getattr(cls: type, name: str) -> Any:
    """What pydantic's metaclass answers for a class attribute that is not there."""
    missing = getattr(ModelMetaclass, "__getattr__", None)
    if missing is None:
        raise AttributeError(name)
    return missing(cls, name)


class _ModelClass(ModelMetaclass):
    """The metaclass of models: pydantic's, with the deprecated class-level names."""

    def __getattr__(cls, name: str) -> Any:
        # pydantic asks each base for every new field's name (hasattr) to warn of
        # shadowing: a deprecated name is no attribute to it, or every field called
        # "count" would warn twice.
        if name in DEPRECATED_CLASS_NAMES and sys._getframe(1).f_globals.get(
            "__name__", ""
        ).startswith("pydantic."):
            return _pydantic_getattr(cls, name)
        if name in DEPRECATED_CLASS_NAMES:
            fields = cls.__dict__.get("__pydantic_fields__")
            manager = cls.__dict__.get("__transient_manager__")
            if fields is not None and name not in fields and manager is not None:
                warnings.warn(
                    f"{cls.__name__}.{name} is deprecated: use {cls.__name__}.objects.{name}",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(manager, name)
        return _pydantic_getattr(cls, name)


class _Shortcut:
    """An instance method that gives way to a field of the same name.

    Not visible on the class (so pydantic sees no attribute for a field to shadow); on an
    instance, a field of that name wins (its value is in the instance's ``__dict__``), and
    the manager's method of the same name always works: ``Task.objects.delete(obj)``.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.__name__ = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            raise AttributeError(self.__name__)
        return self.func.__get__(obj, owner)


class _DeprecatedPk:
    """``obj.pk`` of earlier releases: ``Model.objects.key_of(obj)``, when no field is
    called ``pk``."""

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            raise AttributeError("pk")
        name = type(obj).__name__
        warnings.warn(
            f"{name}().pk is deprecated: use {name}.objects.key_of(obj)",
            DeprecationWarning,
            stacklevel=2,
        )
        return type(obj).objects.key_of(obj)


class _Objects:
    """``Model.objects``: the class's :class:`~pyramid_transient.models.Manager`."""

    @overload
    def __get__(self, obj: None, owner: type[M]) -> Manager[M]: ...
    @overload
    def __get__(self, obj: object, owner: Any = None) -> Manager[Any]: ...
    def __get__(self, obj: Any, owner: Any = None) -> Manager[Any]:
        if obj is not None:
            raise AttributeError(
                f"{type(obj).__name__}.objects is reached through the class, not an "
                f"instance: type(obj).objects"
            )
        return cast(Manager[Any], owner.__dict__["__transient_manager__"])


class RedisModel(BaseModel, metaclass=_ModelClass):
    """Base class of models persisted in Redis.

    Queries live on ``Model.objects`` (a :class:`~pyramid_transient.models.Manager`), apart
    from the fields, so a field may take any name but ``objects`` (and pydantic's own:
    ``model_*``, ``dict``, ``json``, ``copy``, ...). The instance shortcuts ``save()``,
    ``set()``, ``delete()`` and ``refresh()`` give way to a field of the same name; the
    manager's methods always work (``Task.objects.delete(obj)``).

    Class options (all optional):

    ``__expire__``
        Seconds each saved object lives (each save restarts its own clock); ``None``
        (default) keeps objects until deleted.
    ``__unique_together__``
        Field names whose values form the primary key. Without it the ``id`` field is the
        key; a class with neither gets a generated key per object
        (``Model.objects.key_of(obj)``). An optional ``id: str | None`` or
        ``id: int | None`` left at None is generated at the first save.
    ``__layout__``
        ``"hash"`` (default): the objects of a class in one Redis hash; ``"key"``: one Redis
        key per object, with its own TTL.
    ``__indexes__``
        Field names to index: int, float, Decimal, date and datetime fields in a sorted set
        by value; str, bool, Enum and UUID fields in a sorted set by text.
    ``__strict__``
        When true, a lookup no index can serve raises
        :class:`~pyramid_transient.exceptions.FullScanRefused` instead of
        iterating every object (``all()`` and ``delete_all()`` stay allowed).
    ``__optimistic__``
        Default of ``save(if_unmodified=...)`` and ``delete(if_unmodified=...)``.
    ``__storage_name__``
        The name in keys (default: the class name).
    """

    model_config = ConfigDict(
        validate_assignment=True,
        ser_json_inf_nan="constants",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        ignored_types=(_Shortcut, _DeprecatedPk, _Objects),
    )

    __expire__: ClassVar[float | None] = None
    __unique_together__: ClassVar[tuple[str, ...]] = ()
    __layout__: ClassVar[Literal["hash", "key"]] = "hash"
    __indexes__: ClassVar[tuple[str, ...]] = ()
    __strict__: ClassVar[bool] = False
    __optimistic__: ClassVar[bool] = False
    __storage_name__: ClassVar[str | None] = None
    __transient_meta__: ClassVar[_Meta]
    __transient_manager__: ClassVar[Manager[Any]]

    #: The class's queries and writes (see :class:`~pyramid_transient.models.Manager`).
    objects: ClassVar[_Objects] = _Objects()

    _pk: str | None = PrivateAttr(default=None)
    # True from the moment an optional id is filled in until the first save: that save
    # must create the object, never overwrite another one that drew the same id.
    _id_generated: bool = PrivateAttr(default=False)
    _version: int = PrivateAttr(default=0)
    # Versions this object's own deferred writes moved it from and to: a deferred write
    # checks the version it was requested on, followed through these (its own earlier
    # deferred writes of the transaction), never a version read in between.
    _deferred_moves: dict[int, int] = PrivateAttr(default_factory=dict)

    def _deferred_base(self, version: int) -> int:
        while version in self._deferred_moves:
            version = self._deferred_moves[version]
        return version

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # before pydantic collects the fields (and warns that one shadows the manager)
        cls._refuse_reserved(inspect.get_annotations(cls))
        super().__init_subclass__(**kwargs)

    @classmethod
    def _refuse_reserved(cls, names: Any) -> None:
        reserved = sorted(RESERVED & set(names))
        if reserved:
            raise TypeError(
                f"{cls.__qualname__} has a field called {reserved[0]!r}, a name models "
                f"reserve for {cls.__qualname__}.objects (the queries); rename the field"
            )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.__qualname__
        fields = cls.model_fields
        cls._refuse_reserved(fields)
        layout = cls.__dict__.get("__layout__", cls.__layout__)
        if layout not in ("hash", "key"):
            raise TypeError(f"{name}.__layout__ must be 'hash' or 'key', not {layout!r}")
        unique = tuple(cls.__unique_together__)
        for field in unique:
            if field not in fields:
                raise TypeError(
                    f"{name}.__unique_together__ names {field!r}, which is not a field of "
                    f"{name} (fields: {', '.join(fields)})"
                )
        pk_fields = unique or (("id",) if "id" in fields else ())
        indexes = []
        for field in cls.__indexes__:
            if field not in fields:
                raise TypeError(
                    f"{name}.__indexes__ names {field!r}, which is not a field of {name} "
                    f"(fields: {', '.join(fields)})"
                )
            kind = _index_kind(fields[field].annotation)
            if kind is None:
                raise TypeError(
                    f"{name}.__indexes__: field {field!r} of type "
                    f"{fields[field].annotation!r} cannot be indexed; index int, float, "
                    "Decimal, date, datetime, str, bool, Enum or UUID fields"
                )
            indexes.append(_Index(field, kind))
        storage = cls.__dict__.get("__storage_name__") or cls.__name__
        cls.__transient_meta__ = _Meta(
            storage_name=storage,
            layout=layout,
            expire_ms=_expire_ms(name, cls.__expire__),
            pk_fields=pk_fields,
            pk_json=tuple(not isinstance(_strip(fields[f].annotation), type) for f in pk_fields),
            indexes=tuple(indexes),
            index_by_field={i.field: i for i in indexes},
            strict=bool(cls.__strict__),
            optimistic=bool(cls.__optimistic__),
            adapters={f: TypeAdapter(cast(Any, info.annotation)) for f, info in fields.items()},
            value_adapters={
                f: TypeAdapter(cast(Any, _strip(info.annotation))) for f, info in fields.items()
            },
            item_adapters={
                f: None if item is Any else TypeAdapter(item)
                for f, info in fields.items()
                for item in [_item_annotation(info.annotation)]
            },
            names={},
            generated_id=_generated_id_type(pk_fields, fields),
            pk_plain=(
                cast(type, fields[pk_fields[0]].annotation)
                if len(pk_fields) == 1 and fields[pk_fields[0]].annotation in (int, str)
                else None
            ),
        )
        cls.__transient_manager__ = Manager(cls)

    # ------------------------------------------------------------------ shortcuts

    if TYPE_CHECKING:

        @property
        def pk(self) -> str:
            """Deprecated: ``Model.objects.key_of(obj)``."""

    else:
        pk = _DeprecatedPk()

    def _save(
        self,
        *,
        if_unmodified: bool | None = None,
        on_commit: bool = False,
        expire: float | Literal["default"] | None = "default",
    ) -> Self:
        """``Model.objects.save(obj, ...)``: write the object and its index entries (one
        round trip); return it."""
        return cast(
            Self,
            type(self).__transient_manager__.save(
                self, if_unmodified=if_unmodified, on_commit=on_commit, expire=expire
            ),
        )

    def _delete(
        self, *, if_unmodified: bool | None = None, on_commit: bool = False
    ) -> bool | None:
        """``Model.objects.delete(obj, ...)``: delete the object (one round trip); return
        whether it existed."""
        return type(self).__transient_manager__.delete(
            self, if_unmodified=if_unmodified, on_commit=on_commit
        )

    def _refresh(self) -> Self:
        """``Model.objects.refresh(obj)``: reload the object's fields from Redis."""
        return cast(Self, type(self).__transient_manager__.refresh(self))

    if TYPE_CHECKING:
        save = _save
        set = _save
        delete = _delete
        refresh = _refresh
    else:
        save = _Shortcut(_save)
        set = _Shortcut(_save)
        delete = _Shortcut(_delete)
        refresh = _Shortcut(_refresh)


def _root() -> None:
    """``RedisModel.objects``: binding it (``RedisModel.objects.bind(client)``) binds every
    model that has no binding of its own; it has no objects to query."""
    RedisModel.__transient_meta__ = _Meta(
        storage_name="RedisModel",
        layout="hash",
        expire_ms=None,
        pk_fields=(),
        pk_json=(),
        indexes=(),
        index_by_field={},
        strict=True,
        optimistic=False,
        adapters={},
        value_adapters={},
        item_adapters={},
        names={},
    )
    RedisModel.__transient_manager__ = Manager(RedisModel)


_root()
