"""inferline serving: the local Triton server, its admin secret, and a typed HTTP/gRPC client.

The names below are imported on first use (PEP 562), so ``inferline serve --help`` and a command-line mistake
answer without importing torch, tritonclient or aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferline.serving.client import InferlineClient, InferlineError, Predictions, encode_rows
    from inferline.serving.secrets import ADMIN_HEADER, admin_key
    from inferline.serving.server import ServerConfig, ServerError, TritonServer, free_port, published_pipelines

_WHERE = {
    "ADMIN_HEADER": "secrets",
    "InferlineClient": "client",
    "InferlineError": "client",
    "Predictions": "client",
    "ServerConfig": "server",
    "ServerError": "server",
    "TritonServer": "server",
    "admin_key": "secrets",
    "encode_rows": "client",
    "free_port": "server",
    "published_pipelines": "server",
}

__all__ = [
    "ADMIN_HEADER",
    "InferlineClient",
    "InferlineError",
    "Predictions",
    "ServerConfig",
    "ServerError",
    "TritonServer",
    "admin_key",
    "encode_rows",
    "free_port",
    "published_pipelines",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'inferline.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(f"inferline.serving.{_WHERE[name]}"), name)
