"""How a user's own modules (a pipeline spec, its kernels, rules and preprocessing functions, named by import path)
reach the interpreter inside Triton's Python-backend stubs.

The stub starts an embedded interpreter that ignores ``PYTHONPATH`` (measured: the variable is in its environment,
its entries are not on ``sys.path``). Two routes work, both documented in docs/tutorials/bring-your-own-model.md:

1. an installed package: ``pip install -e .`` (or any install) into the environment inferline runs in. The stubs
   use that environment's ``site-packages`` (``serving.server``: its ``bin/`` is first on ``PATH``);
2. ``PYTHONPATH`` where the server starts: ``TritonServer`` passes its entries, made absolute, explicitly as
   ``INFERLINE_USER_PATH``, and inferline's stub models call ``add_user_path()`` first thing in ``initialize()``,
   which puts them at the front of ``sys.path``, as ``PYTHONPATH`` would have.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["USER_PATH", "add_user_path", "user_path"]

USER_PATH = "INFERLINE_USER_PATH"


def user_path(environ: Mapping[str, str]) -> str:
    """``PYTHONPATH``'s entries made absolute (against this process's working directory), ``os.pathsep``-joined:
    the value the server hands its stubs as ``USER_PATH``."""
    entries = [e for e in environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return os.pathsep.join(os.path.abspath(e) for e in entries)


def add_user_path(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Put the entries of ``USER_PATH`` first on ``sys.path`` (in order, each once); the entries added."""
    entries = [e for e in environ.get(USER_PATH, "").split(os.pathsep) if e]
    added = [e for e in entries if e not in sys.path]
    sys.path[:0] = added
    return added
