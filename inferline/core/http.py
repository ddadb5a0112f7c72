"""Small HTTP calls (JSON or text) with one timeout and one retry policy, and ``Backoff``, the one capped exponential
backoff every retry loop of the project uses (HTTP calls here, the serving client's inferences, the supervisor's
restarts, the alert webhook).

Why not a library: tenacity and backoff are not installed, and urllib3 (installed, through tritonclient and
requests, but not a dependency of ours) retries only its own HTTP calls: its ``Retry`` cannot time a gRPC retry or a
process restart, and its jitter is added to the delay, where the serving client needs full jitter (a delay drawn
from ``[0, cap]``) so that a burst of refused callers does not come back in lockstep. So the calls use the standard
library's urllib (which also keeps the proxy settings and the errors callers already handle: a non-2xx answer is
raised as ``urllib.error.HTTPError``, the same object callers read the body of), and ``Backoff`` is ten lines.

What is retried (``retryable``): a connection that fails or times out, and a 5xx answer; never a 4xx (the request
itself is wrong, and would be wrong again). The last error is raised as it came.
"""

from __future__ import annotations

import json
import math
import random
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NO_RETRY",
    "Backoff",
    "Response",
    "answers_ok",
    "get_json",
    "get_text",
    "post_json",
    "request",
    "retryable",
]


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: the wait before retry ``n`` (0 for the first) is ``min(cap_s, base_s * 2**n)``,
    or with ``jitter`` a uniform draw from ``[0, that]`` (full jitter). ``attempts`` counts every try, the first
    included (1: no retry)."""

    base_s: float
    cap_s: float = math.inf
    attempts: int = 1
    jitter: bool = False

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        bound = min(self.cap_s, self.base_s * 2**retry)
        return (rng or random).uniform(0, bound) if self.jitter else bound


NO_RETRY = Backoff(0.0)


@dataclass(frozen=True)
class Response:
    """A 2xx answer, read whole."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


def retryable(exc: BaseException) -> bool:
    """Worth another try: a 5xx answer, or a connection that failed or timed out (not a 4xx: the request is wrong)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, OSError)  # URLError, socket timeouts and refused connections are OSErrors


def _headers(headers: dict[str, str] | None, key: str | None) -> dict[str, str]:
    out = dict(headers or {})
    if key is not None:
        out["Authorization"] = f"Bearer {key}"
    return out


def request(
    url: str,
    data: bytes | None = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = None,
    timeout_s: float = 10.0,
    retry: Backoff = NO_RETRY,
    context: ssl.SSLContext | None = None,
) -> Response:
    """One HTTP request (GET, or POST when ``data`` is given, unless ``method`` says otherwise), each try bounded by
    ``timeout_s``, retried by ``retry`` while the error is ``retryable``. ``key``: sent as ``Authorization: Bearer
    <key>``. A non-2xx answer raises ``urllib.error.HTTPError``; a connection that fails, ``URLError`` or
    ``OSError``: the last try's error, as urllib raised it."""
    for attempt in range(max(1, retry.attempts)):
        prepared = urllib.request.Request(url, data=data, headers=_headers(headers, key), method=method)
        try:
            with urllib.request.urlopen(prepared, timeout=timeout_s, context=context) as answer:
                return Response(int(answer.status), answer.read())
        except OSError as exc:  # HTTPError and URLError are OSErrors
            if attempt + 1 >= retry.attempts or not retryable(exc):
                raise
        time.sleep(retry.delay(attempt))  # backoff between tries
    raise AssertionError("unreachable: the last try returns or raises")


def get_json(
    url: str,
    timeout_s: float = 10.0,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    retry: Backoff = NO_RETRY,
) -> Any:
    """GET ``url`` and decode its JSON answer."""
    return request(url, headers=headers, key=key, timeout_s=timeout_s, retry=retry).json()


def get_text(
    url: str,
    timeout_s: float = 10.0,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    retry: Backoff = NO_RETRY,
) -> str:
    """GET ``url`` and return its answer as text (e.g. a Prometheus exposition)."""
    return request(url, headers=headers, key=key, timeout_s=timeout_s, retry=retry).text()


def post_json(
    url: str,
    payload: Any,
    timeout_s: float = 10.0,
    key: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    retry: Backoff = NO_RETRY,
) -> Any:
    """POST ``payload`` as JSON and return the decoded answer; ``key``: a bearer token (the monitor's ingest key,
    ``core.secrets.monitor_key``)."""
    body = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    return request(url, body, method="POST", headers=sent, key=key, timeout_s=timeout_s, retry=retry).json()


def answers_ok(url: str, timeout_s: float = 1.0, headers: dict[str, str] | None = None) -> bool:
    """``url`` answers a GET with 200 now (a readiness check: any failure, or another status, is False)."""
    try:
        return request(url, headers=headers, timeout_s=timeout_s).status == 200
    except OSError:
        return False
