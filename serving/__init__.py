"""inferline serving: the local Triton server, its admin secret, and a typed HTTP/gRPC client.

The names below are imported on first use (PEP 562), so ``inferline serve --help`` and a command-line mistake
answer without importing torch, tritonclient or aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from inferline.serving.client import InferlineClient, InferlineError, Predictions, encode_rows
    from inferline.serving.server import ServerConfig, TritonServer
    from inferline.serving.triton_index import ServerError

__getattr__, __all__ = lazy_attributes(
    __name__,
    {
        "InferlineClient": "client",
        "InferlineError": "client",
        "Predictions": "client",
        "ServerConfig": "server",
        "ServerError": "triton_index",
        "TritonServer": "server",
        "encode_rows": "client",
    },
)
