"""What a Triton server serves: its repository index (``POST /v2/repository/index``: state and reason per model
version) read into one ``LoadStatus`` per pipeline or model, with Triton's own reason for each one it could not
load; and ``ServerError``, what the local server's code raises.

Apart from ``server`` because ``serve status`` reads a running server's index with these, without the process class
that starts one.
"""

from __future__ import annotations

import json
import urllib.error
from dataclasses import dataclass
from typing import Any, Literal

from inferline.core.errors import UserError
from inferline.core.http import post_json
from inferline.core.secrets import ADMIN_HEADER

__all__ = [
    "LoadStatus",
    "ModelState",
    "ServerError",
    "UnitState",
    "fix_hint",
    "load_status",
    "repository_index",
]


class ServerError(UserError, RuntimeError):
    """The model server cannot be started or asked: it does not answer its repository index, its admin-key helper
    library cannot be built or read, a part of ``nvidia-pytriton`` is missing, or it is already running."""


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index (``POST /v2/repository/index``): a model directory, one version of it
    and the state Triton holds it in (``READY``, ``LOADING``, ``UNLOADING``, ``UNAVAILABLE``), with Triton's own
    ``reason`` when it is not ready (the error its load failed with, ``unloaded``, ...). ``version`` and ``state``
    are empty for a directory Triton was never asked to load."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""


UnitState = Literal["READY", "LOADING", "UNAVAILABLE"]


@dataclass(frozen=True)
class LoadStatus:
    """Whether one thing the server was asked to load is served: a pipeline (the models of its current release) or,
    for a server started with ``ServerConfig.models``, one model. ``reason`` is empty when ``READY``; else it says
    why not, in Triton's own words for each model that is not ready (or why the release never reached Triton).
    ``release``: the pipeline's release asked for; once READY, the one served (the highest ready version of its
    first model)."""

    name: str
    models: tuple[str, ...]
    state: UnitState
    reason: str = ""
    release: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "state": self.state,
            "models": list(self.models),
            **({"reason": self.reason} if self.reason else {}),
        }


def repository_index(url: str, key: str, timeout_s: float = 10.0) -> list[ModelState]:
    """Triton's repository index at ``url`` (HTTP ``host:port``), an admin API (``key`` is the admin key), read with
    urllib: every model directory, each version Triton was asked to load with its state and reason. A server that
    does not answer, or answers something else, is a ``ServerError``."""
    try:
        rows = post_json(f"http://{url}/v2/repository/index", {}, timeout_s, headers={ADMIN_HEADER: key})
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise ServerError(
            f"tritonserver at {url} did not return its repository index ({type(exc).__name__}: {exc}); expected the "
            "JSON list Triton answers on POST /v2/repository/index: is the server up, and is the admin key its own?"
        ) from exc
    if not isinstance(rows, list):
        raise ServerError(f"tritonserver at {url} answered its repository index with {str(rows)[:200]}, not a list")
    return [
        ModelState(
            name=str(row.get("name", "")),
            version=str(row.get("version", "")),
            state=str(row.get("state", "")),
            reason=str(row.get("reason", "")),
        )
        for row in rows
        if isinstance(row, dict)
    ]


def _model_state(name: str, index: list[ModelState]) -> tuple[UnitState, str]:
    """One model: READY when one of its versions is (a release switch holds two), LOADING while one loads, else
    UNAVAILABLE with Triton's reason for each version."""
    rows = [m for m in index if m.name == name]
    if any(m.state == "READY" for m in rows):
        return "READY", ""
    if any(m.state == "LOADING" for m in rows):
        return "LOADING", ""
    why = [(f"version {m.version}: " if m.version else "") + (m.reason or m.state) for m in rows if m.state or m.reason]
    if not why:
        why = [
            "not loaded, and Triton's repository index gives no reason (is there a model directory of that name "
            "with a config.pbtxt? The server log has Triton's error)"
        ]
    return "UNAVAILABLE", f"model {name!r} " + "; ".join(why)


def load_status(
    index: list[ModelState],
    plan: dict[str, list[str]],
    releases: dict[str, int] | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, LoadStatus]:
    """``{name: LoadStatus}`` for each entry of ``plan`` (``{pipeline or model: the models that serve it}``) from
    Triton's repository ``index``: READY when all its models are, LOADING while one still loads, else UNAVAILABLE
    with the reasons. ``refused`` (``{name: why}``) were never handed to Triton; ``releases`` names their releases."""
    releases, refused = releases or {}, refused or {}
    out: dict[str, LoadStatus] = {}
    for name, models in plan.items():
        release = releases.get(name)
        if name in refused:
            out[name] = LoadStatus(name, tuple(models), "UNAVAILABLE", refused[name], release)
            continue
        states = [_model_state(m, index) for m in models]
        reasons = [why for state, why in states if state == "UNAVAILABLE"]
        if reasons:
            out[name] = LoadStatus(name, tuple(models), "UNAVAILABLE", "; ".join(reasons), release)
        elif any(state == "LOADING" for state, _ in states):
            out[name] = LoadStatus(name, tuple(models), "LOADING", "", release)
        else:  # the served release: the highest ready version of its first model (fused: <p>; ensemble: <p>_preprocess)
            served = [
                int(m.version) for m in index if m.name == models[0] and m.state == "READY" and m.version.isdigit()
            ]
            out[name] = LoadStatus(name, tuple(models), "READY", "", max(served, default=release))
    return out


def fix_hint(pipeline: str) -> str:
    """What to do about a pipeline whose current release does not load."""
    return (
        f"Fix {pipeline!r}: publish a corrected release (`inferline export publish`), or roll back to the previous "
        f"one (`inferline export rollback --pipeline {pipeline}`), then `inferline serve apply --pipeline {pipeline}`"
        " (or restart the server)."
    )
