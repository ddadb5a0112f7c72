"""Who may call what at the edge: with API keys, every route but the health probes needs a key
(``Authorization: Bearer <key>`` over HTTP, the ``authorization`` metadata over gRPC); and, with a repository,
only its public pipelines are reachable (their inner models, the ONNX model behind an ensemble or the
preprocessing, and unknown names answer 403).

Why one object for both edges: the HTTP gateway and the gRPC edge refuse the same callers and the same models with
the same messages; ``EdgeAccess`` holds the keys and the repository's public names once.
"""

from __future__ import annotations

import time
import typing
from pathlib import Path

from inferline.serving.edge_limits import RequestRejected, invalid
from inferline.serving.edge_protocol import DIGITS, NAME

if typing.TYPE_CHECKING:
    from aiohttp import web

    from inferline.serving.apikeys import ApiKeys

__all__ = ["UNAUTHENTICATED", "EdgeAccess"]

UNAUTHENTICATED = ("/v2/health/live", "/v2/health/ready")  # probes (a load balancer's, Kubernetes') need no key


class EdgeAccess:
    """The edge's access checks. ``api_keys``: None when callers are not authenticated (the edge then belongs on
    loopback). ``repository``: only its public pipelines (a registry each) are reachable; None: every model (a
    gateway without a repository)."""

    def __init__(self, api_keys: ApiKeys | None, repository: Path | None) -> None:
        self.api_keys = api_keys
        self.repository = repository
        self._public: tuple[float, frozenset[str]] = (-1.0, frozenset())

    def check_request(self, request: web.Request) -> None:
        """An HTTP request's key (but on the health probes) and the model and version its route names."""
        if self.api_keys is not None and request.path not in UNAUTHENTICATED:
            self.authenticate(request.headers.get("Authorization", ""))
        self.check_model(request.match_info.get("model"), request.match_info.get("version"))

    def authenticate(self, authorization: str) -> None:
        """With API keys, every route but the health probes needs ``Authorization: Bearer <key>`` (over gRPC the
        ``authorization`` metadata): refused (401, UNAUTHENTICATED) without one or with one that is not in the keys
        file (mistyped or revoked)."""
        if self.api_keys is None:
            return
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise RequestRejected(
                401, "unauthenticated", "this edge needs an API key: send 'Authorization: Bearer <key>'"
            )
        if self.api_keys.caller(key.strip()) is None:
            raise RequestRejected(
                401, "bad_api_key", "the API key is not valid (mistyped or revoked); ask the operator for a key"
            )

    def public_models(self) -> frozenset[str]:
        """The repository's public pipelines, read again at most once a second (a new pipeline becomes
        reachable without a restart)."""
        from inferline.release.registry import registered_pipelines

        assert self.repository is not None
        at, names = self._public
        now = time.monotonic()
        if now - at > 1.0:
            names = frozenset(registered_pipelines(self.repository))
            self._public = (now, names)
        return names

    def check_model(self, model: str | None, version: str | None) -> None:
        """A model name and version as the edge accepts them (full matches), naming a public pipeline: 400 (or
        INVALID_ARGUMENT) for a malformed one, 403 (PERMISSION_DENIED) for an inner model or an unknown one."""
        if model is not None and (not NAME.fullmatch(model) or ".." in model):
            raise invalid(
                f"model name {model[:80]!r} is not valid: letters, digits, '_', '-' and '.' only (no '..'), "
                "at most 128 characters"
            )
        if version is not None and not DIGITS.fullmatch(version):
            raise invalid(f"model version {version[:40]!r} is not valid: a positive integer")
        if model is not None and self.repository is not None and model not in self.public_models():
            raise RequestRejected(
                403,
                "not_public",
                f"model {model!r} is not a public pipeline of this server (an inner model of one, or unknown); "
                f"call a pipeline: {sorted(self.public_models())}",
            )
