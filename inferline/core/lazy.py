"""Lazy package attributes (PEP 562), written once for every stage's ``__init__``.

A stage's package names its public objects, each imported from its module on first use, so that importing one
light module of a stage (``inferline.features.kernels`` on a machine without pandas, ``inferline.release.registry``
in the monitor) never pays for the stage's heavy ones (torch, tritonclient, aiohttp). Type checkers see the names
through the ``if TYPE_CHECKING:`` imports beside the call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """``__getattr__`` and ``__all__`` for ``package``: ``where`` maps each public name to its submodule."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__, sorted(where)
