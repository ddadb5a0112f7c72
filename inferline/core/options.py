"""Command-line options written once: a dataclass field carries its flag, help, type and default.

Before, each option of a configuration was spelled out three times (the dataclass field and its default, the
argparse option with its own default, and the mapping ``Config(x=args.x, ...)``), and the three drifted apart. Here
the field is the one place: :func:`option` stores the flag and help in the field's metadata, :func:`add_options`
adds every such field of a dataclass to a parser (the default is the field's), and :func:`from_args` builds the
dataclass from the parsed arguments. argparse itself stays the parser (its help, errors and exit status 2 are what
users of every Python CLI know); this only removes the copies.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, dataclass_transform

__all__ = ["add_options", "config", "from_args", "option"]

T = TypeVar("T")
_KEY = "inferline.option"


@dataclasses.dataclass(frozen=True)
class _Option:
    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None
    nargs: str | None = None
    required: bool = False
    convert: Callable[[Any], Any] | None = None  # parsed value -> field value (e.g. str -> Path)


def option(
    flag: str,
    help: str,
    *,
    default: Any = dataclasses.MISSING,
    type: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    nargs: str | None = None,
    convert: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is also the command-line option ``flag``. A field without a default is a required
    option; a ``bool`` field defaulting to False is a ``store_true`` flag."""
    meta = {_KEY: _Option(flag, help, type, choices, nargs, default is dataclasses.MISSING, convert)}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass_transform(field_specifiers=(dataclasses.field, option))
def config(cls: type[T]) -> type[T]:
    """``@dataclass`` for a configuration whose fields may be :func:`option` fields (PEP 681 tells type checkers
    that ``option`` is a field specifier: a field made without ``default`` is required)."""
    return dataclasses.dataclass(cls)


def _options(cls: type) -> list[tuple[dataclasses.Field[Any], _Option]]:
    return [(f, f.metadata[_KEY]) for f in dataclasses.fields(cls) if _KEY in f.metadata]


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add every :func:`option` field of the dataclass ``cls`` to ``parser``, in field order."""
    for f, opt in _options(cls):
        kwargs: dict[str, Any] = {"dest": f.name, "help": opt.help}
        if f.default is not False and not opt.choices:
            kwargs["metavar"] = opt.flag.lstrip("-").upper().replace("-", "_")
        if opt.required:
            kwargs["required"] = True
        elif f.default is False:
            kwargs.update(action="store_true", default=False)
        else:
            kwargs["default"] = f.default
        if "action" not in kwargs:
            kwargs.update({k: v for k, v in (("type", opt.type), ("choices", opt.choices), ("nargs", opt.nargs)) if v})
        parser.add_argument(opt.flag, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace, **others: Any) -> T:
    """The dataclass ``cls`` from parsed ``args`` (each :func:`option` field, converted) and ``others`` (the fields
    that are not options, or whose value the command derives)."""
    values: dict[str, Any] = {}
    for f, opt in _options(cls):
        if f.name in others:
            continue
        value = getattr(args, f.name)
        values[f.name] = opt.convert(value) if opt.convert is not None and value is not None else value
    return cls(**values, **others)
