"""Checking a config node against a schema, with every failure as one :class:`ConfigError`.

A schema is a dataclass: ``OmegaConf.structured`` rejects unknown keys, wrong types and values
outside an ``Enum`` with the full key and the allowed set, and ``OmegaConf.to_object`` runs the
dataclass's ``__post_init__``, where range and cross-field checks raise with key, value and what
is allowed. A class's constructor can serve as the schema of its options (:func:`options_schema`).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib
import inspect
import types
import typing
from dataclasses import field, make_dataclass
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")
# keys Hydra reads itself; they are no constructor argument
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


class ConfigError(ValueError):
    """An invalid configuration value."""


def positive(key: str, value: int | float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value <= 0:
        raise ConfigError(f"{key}={value}: must be a positive number")


def unit_interval(key: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}={value}: must lie in [0, 1)")


def check(schema: type, node: Any, key: str) -> Any:
    """Merge ``node`` (at ``key``; "" for the root) into ``schema`` and build the dataclass.

    Raises:
        ConfigError: naming the full key, the value and what is allowed.
    """
    try:
        if isinstance(node, DictConfig):
            node = OmegaConf.to_container(node, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as error:
        full_key = ".".join(part for part in (key, getattr(error, "full_key", "")) if part)
        reason = str(error).splitlines()[0]
        raise ConfigError(f"{full_key}: {reason}") from error
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key}: {error}") from error


def import_class(target: Any, key: str, base: type[T]) -> type[T]:
    """The class at ``target`` (a ``_target_`` value at ``key``), a subclass of ``base``.

    Raises:
        ConfigError: naming the key, the value and why it cannot be used.
    """
    module, _, name = str(target).rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"{key}={target}: cannot import it ({error})") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(f"{key}={target}: not a subclass of {base.__module__}.{base.__name__}")
    return found


PLAIN_TYPES = (int, float, bool, str)


def _schema_type(hint: Any) -> Any:
    """``hint`` as OmegaConf can check it: a plain type, optionally None, or a list of one; a
    sequence becomes a list, anything else Any (left to the constructor)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in PLAIN_TYPES:
        return hint
    if origin in (collections.abc.Sequence, list, tuple) and args and args[0] in PLAIN_TYPES:
        return list[args[0]]  # type: ignore[valid-type]
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = (arg for arg in args if arg is not type(None))
        return _schema_type(inner) | None if _schema_type(inner) is not Any else Any
    return Any


def options_schema(cls: type, skip: tuple[str, ...] = ()) -> type:
    """A dataclass of the keyword arguments of ``cls``'s constructor (except ``skip``), with their
    annotations and defaults, plus Hydra's ``_target_``/``_partial_``: the schema of a config node
    that instantiates ``cls``. A constructor without ``**kwargs`` is the whole list of options."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    fields: list[tuple[str, Any, Any]] = [
        ("_target_", str, field(default="")),
        ("_partial_", bool, field(default=False)),
    ]
    for name, parameter in inspect.signature(cls).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default
        if default is inspect.Parameter.empty:
            spec = field(default=MISSING)  # OmegaConf's '???': a required option
        elif isinstance(default, list | tuple):
            spec = field(default_factory=functools.partial(list, default))
        else:
            spec = field(default=default)
        fields.append((name, _schema_type(hints.get(name, Any)), spec))
    return make_dataclass(f"{cls.__name__}Options", fields)


def check_options(cls: type, node: Any, key: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options a config node gives ``cls``'s constructor, type-checked against its signature.

    Raises:
        ConfigError: a key the constructor does not take (the allowed ones listed), or a value of
            the wrong type.
    """
    schema = options_schema(cls, skip)
    allowed = [f.name for f in dataclasses.fields(schema) if f.name not in HYDRA_KEYS]
    unknown = [name for name in node if name not in allowed and name not in HYDRA_KEYS]
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]}: not an option of {cls.__name__}; allowed: "
            + (", ".join(allowed) or "none")
        )
    parsed = check(schema, node, key)
    return {name: getattr(parsed, name) for name in allowed}
