"""inferline serving: the local Triton server, its admin secret, and a typed HTTP/gRPC client."""

from inferline.serving.client import InferlineClient, InferlineError, Predictions, encode_rows
from inferline.serving.secrets import ADMIN_HEADER, admin_key
from inferline.serving.server import ServerConfig, ServerError, TritonServer, free_port, published_pipelines

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
