"""A rollout's plan and state: the one file that the command starting it, the edge routing it and the monitor deciding
it share (``<repository>/<pipeline>.rollout.json``, beside the registry).

Three parties, one hand-off each way, all through files written atomically:

1. ``inferline rollout shadow|canary N`` (``monitor.rollout_cli``) writes the rollout in phase ``starting``
   (every request addressed to the current release by version), waits for the edge's acknowledgement, then loads
   release N beside the current one on the running Triton (``release.switch.load_beside``: with two versions
   loaded, Triton would send a request naming no version to the highest), warms it with real inferences, and
   writes phase ``running`` at step 0.
2. The edge (``serving.edge_route``) re-reads the file when it changes and routes by it: in a canary, a share of the
   pipeline's requests goes to N (sticky by a caller's key when the rollout names one); in a shadow, every request is
   answered by the current release and a share is also sent to N off the request path. Each time it applies a new
   ``generation`` it writes the acknowledgement file (``<pipeline>.rollout.ack.json``) naming it.
3. The monitor (``monitor.rollout``) decides each step on what both releases answered during it, then writes the
   next step, or ``promoting`` / ``rolling_back`` (all traffic to one release, versions still both loaded), waits
   for the edge's acknowledgement of that routing, and only then unloads the release nobody is routed to
   (``release.switch.keep_only``) and writes the terminal phase. Promotion and rollback change routing first, the
   server's loaded versions after: no request is ever sent to a version being unloaded.

Phases: ``starting`` (N being loaded; nobody routed to it) -> ``running`` (steps in progress) -> ``promoting`` ->
``promoted``; ``running`` -> ``rolling_back`` -> ``outcome``: ``rolled_back`` (a breach), ``passed`` (a shadow
that passed: it is unloaded too, and a canary loads it again) or ``aborted`` (the operator's stop).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json

__all__ = [
    "ROUTED_PHASES",
    "TERMINAL_PHASES",
    "Rollout",
    "RolloutError",
    "ack_path",
    "read_ack",
    "read_rollout",
    "rollout_path",
    "wait_for_ack",
    "write_ack",
    "write_rollout",
]

Mode = Literal["shadow", "canary"]
ROUTED_PHASES = ("starting", "running", "promoting", "rolling_back")
"""Phases in which the edge routes by the rollout (both releases are loaded)."""
TERMINAL_PHASES = ("promoted", "rolled_back", "passed", "aborted")
"""Phases a rollout ends in (the edge routes by the registry alone again)."""


class RolloutError(UserError, RuntimeError):
    """A rollout that cannot start or go on; the message says why and what to do."""

    docs = "tutorials/rollouts.md"


@dataclass
class Rollout:
    pipeline: str
    mode: Mode
    current: int  # the release answering callers (the baseline)
    candidate: int
    shares: list[float]  # canary: the candidate's share of requests per step; shadow: one share of requests copied
    sticky_header: str | None = None  # the caller's key for a sticky split (a header), hashed
    policy: dict[str, Any] = field(default_factory=dict)  # monitor.rollout_decision.Policy's fields
    id: str = field(default_factory=lambda: secrets.token_hex(4))
    step: int = 0
    phase: str = "starting"
    generation: int = 0  # bumped by every write: the edge acknowledges the generation it routes by
    started_at: float = field(default_factory=time.time)
    step_started_at: float = field(default_factory=time.time)
    decided_at: float | None = None
    reason: str = ""
    outcome: str = "rolled_back"  # the phase that ``rolling_back`` ends in: rolled_back, passed or aborted
    decisions: list[dict[str, Any]] = field(default_factory=list)  # each step's evidence (StepDecision.as_dict)

    @property
    def routed(self) -> bool:
        return self.phase in ROUTED_PHASES

    @property
    def share(self) -> float:
        """The candidate's share of the requests now: of the answers (canary) or of the copies (shadow)."""
        if self.phase == "promoting":
            return 1.0 if self.mode == "canary" else 0.0
        if self.phase != "running":
            return 0.0
        return self.shares[min(self.step, len(self.shares) - 1)]

    @property
    def answering(self) -> int:
        """The release that answers a request not sent to the candidate."""
        return self.candidate if self.phase in ("promoting", "promoted") and self.mode == "canary" else self.current

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rollout:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def rollout_path(repository: Path, pipeline: str) -> Path:
    return Path(repository) / f"{pipeline}.rollout.json"


def ack_path(repository: Path, pipeline: str) -> Path:
    return Path(repository) / f"{pipeline}.rollout.ack.json"


def read_rollout(repository: Path, pipeline: str) -> Rollout | None:
    """The pipeline's last rollout (active or finished), None when it never had one."""
    path = rollout_path(repository, pipeline)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RolloutError(f"{path} is not a rollout file ({exc}); delete it to start a new rollout") from exc
    try:
        return Rollout.from_dict(data)
    except (AttributeError, TypeError) as exc:  # JSON, but not a rollout's fields (a list, a field missing)
        raise RolloutError(f"{path} is not a rollout file ({exc}); delete it to start a new rollout") from exc


def write_rollout(repository: Path, rollout: Rollout) -> Rollout:
    """Write ``rollout`` atomically with the next generation (the edge routes by what it reads whole)."""
    rollout.generation += 1
    atomic_write_json(rollout_path(repository, rollout.pipeline), rollout.as_dict())
    return rollout


def write_ack(repository: Path, pipeline: str, rollout_id: str, generation: int) -> None:
    """The edge's word that it routes by ``generation`` of rollout ``rollout_id`` from now on."""
    atomic_write_json(ack_path(repository, pipeline), {"id": rollout_id, "generation": generation, "at": time.time()})


def read_ack(repository: Path, pipeline: str) -> tuple[str, int] | None:
    try:
        data = json.loads(ack_path(repository, pipeline).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return str(data.get("id")), int(data.get("generation", 0))


def wait_for_ack(repository: Path, rollout: Rollout, timeout_s: float) -> bool:
    """Wait until an edge routes by ``rollout``'s current generation (it re-reads every 0.1 s); False when none said
    so within ``timeout_s`` (no edge runs, or it is down)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ack = read_ack(repository, rollout.pipeline)
        if ack is not None and ack[0] == rollout.id and ack[1] >= rollout.generation:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # acknowledgement polling interval
