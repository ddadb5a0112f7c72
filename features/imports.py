"""Code a pipeline names by import path (``"package.module:name"``): model factories, kernels, preprocessing
functions and elementwise rules. A release records the path and a hash of the module's source, never pickled code,
so what a release runs is named, inspectable and importable where it is served."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

from inferline.features.errors import UserError

__all__ = ["ImportPathError", "import_object", "import_path_of", "source_sha256"]


class ImportPathError(UserError, ValueError):
    """An import path that does not name an importable object."""


def import_object(path: str, what: str) -> Any:
    """``"pkg.mod:qual.name"`` -> the object. ``what`` names it in the error ("model factory", "kernel")."""
    module, sep, qualname = str(path).partition(":")
    if not sep or not module or not qualname:
        raise ImportPathError(
            f"{what} {path!r} is not an import path; expected 'package.module:name' (for example "
            "'my_models.cnn:build'), with the module importable where inferline runs"
        )
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ImportPathError(
            f"{what} {path!r} cannot be imported ({exc}); install the package that defines it (pip install -e .) "
            "or put its folder on PYTHONPATH"
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
