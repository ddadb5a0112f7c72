"""Code a pipeline names by import path (``"package.module:name"``): model factories, kernels, preprocessing
functions and elementwise rules. A release records the path and a hash of the module's source, never pickled code,
so what a release runs is named, inspectable and importable where it is served."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

from inferline.core.errors import UserError

__all__ = ["ImportPathError", "import_module", "import_object", "import_path_of", "source_sha256"]


class ImportPathError(UserError, ValueError):
    """An import path that does not name an importable object."""

    docs = "tutorials/bring-your-own-model.md#where-your-modules-must-be-importable"


def import_module(name: str, what: str) -> Any:
    """Import the user's module ``name`` (``what`` names it in the error: "pipeline module", "model factory
    'pkg.mod:build'"). A module that is not there raises ``ModuleNotFoundError`` as ``importlib`` does (callers
    say where they looked); a module that is there but whose own import fails (a package it imports is missing, a
    syntax error, an exception at its top level) raises ``ImportPathError`` naming the module and its error."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        parts = name.split(".")
        if exc.name in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise  # the module itself (or its package) is not importable
        raise ImportPathError(
            f"{what} {name!r} is there, but its own import failed: {exc}; install the package that provides "
            f"{str(exc.name).partition('.')[0]!r} in the environment that runs it (pip install ...), or fix the module"
        ) from exc
    except Exception as exc:  # the user's module's own code (a SyntaxError names its file and line): one line
        raise ImportPathError(
            f"{what} {name!r} failed while importing: {type(exc).__name__}: {exc}; fix the module so that "
            f"`python -c 'import {name}'` succeeds"
        ) from exc


def import_object(path: str, what: str) -> Any:
    """``"pkg.mod:qual.name"`` -> the object. ``what`` names it in the error ("model factory", "kernel")."""
    module, sep, qualname = str(path).partition(":")
    if not sep or not module or not qualname:
        raise ImportPathError(
            f"{what} {path!r} is not an import path; expected 'package.module:name' (for example "
            "'my_models.cnn:build'), with the module importable where inferline runs"
        )
    try:
        target: Any = import_module(module, f"module of {what} {path!r}:")
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ImportPathError(
            f"{what} {path!r} cannot be imported ({exc}); install the package that defines it into the environment "
            "inferline runs in (pip install -e .), or put its folder on PYTHONPATH where inferline runs (`serve up` "
            "hands it to Triton's Python stubs, which ignore the variable itself)"
        ) from exc
    return target


def import_path_of(obj: Any) -> str:
    """The import path of a module-level function or class (the inverse of ``import_object``)."""
    path = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
    if "<" in path or path.startswith(":") or path.endswith(":"):
        raise ImportPathError(
            f"{obj!r} has no import path (a lambda or a nested function); define it with `def` at the top of a module"
        )
    return path


def source_sha256(path: str) -> str | None:
    """sha256 of the source file of the module ``path`` names (None when it has no file, e.g. a builtin)."""
    module = importlib.import_module(str(path).partition(":")[0])
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return None
    return hashlib.sha256(source.encode()).hexdigest()
