"""The rollout controller: the monitor decides each step of a shadow or canary rollout (``release.rollout``) on what
both releases answered during it, and promotes or rolls back by itself.

Evidence (``RolloutEvidence``), per step: the edge's sampler hands the monitor the answers of both releases (in a
canary the candidate's answers are all sampled and the current release's at share/(1 - share), so the two arms are
about the same size; in a shadow both answers to each copied request, paired by row), with the latency the edge
measured per request. Failed requests per release come from Triton's own counters (``nv_inference_request_success``
and ``_failure`` per model version), as they moved since the step began.

The decision (``RolloutController.tick``, once per monitor tick):

1. nothing to do unless the pipeline's rollout is ``running`` (or was left half-way in ``promoting`` /
   ``rolling_back`` by a monitor that stopped: finished here);
2. a new step starts a new evidence window (and notes Triton's counters);
3. the step is decided once, at one look: when each arm holds ``min_rows`` rows and ``min_requests`` latencies (a
   shadow: ``min_rows`` pairs too); the tests, their levels and why one look per step keeps the declared false-alarm
   rate are ``monitor.rollout_decision``'s;
4. a breach: routing moves to the current release alone (``rolling_back``), the edge acknowledges it, the candidate
   is unloaded (``release.switch.keep_only``), the registry gets an audit entry with the evidence, and a critical
   alert carries the figures. A pass at the last step: all traffic to the candidate (``promoting``), acknowledged,
   the old release unloaded, the registry's pointer moved (audit entry with the evidence), an info alert. A pass
   before it: the next step's share. A shadow that passes ends ``passed`` (its candidate stays loaded for a canary).

No request is sent to a version being unloaded: routing changes first and the versions loaded change only after
the edge says it routes by the new generation (``release.rollout.read_ack``; after ``ack_timeout_s`` without an
edge's word, e.g. no edge runs, it goes on and says so in the rollout's reason).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferline.core.alerts import Alert, Alerter, Severity
from inferline.core.files import atomic_write_json
from inferline.monitor.ingest import TritonCounters
from inferline.monitor.rollout_decision import Arm, Paired, Policy, StepDecision, decide_step
from inferline.release.registry import Registry, model_names
from inferline.release.rollout import Rollout, read_rollout, wait_for_ack, write_rollout
from inferline.release.switch import ReleaseSwitchError, keep_only

__all__ = ["ROLLOUT_USER", "RolloutController", "RolloutEvidence", "evidence_path"]

log = logging.getLogger("inferline.monitor.rollout")

ROLLOUT_USER = "inferline-rollout"


def evidence_path(repository: Path, pipeline: str) -> Path:
    """The running step's evidence so far, written each tick for ``inferline rollout status``."""
    return Path(repository) / f"{pipeline}.rollout.evidence.json"


@dataclass
class _Arm:
    latency_s: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    predicted: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    pairs: dict[int, float] = field(default_factory=dict)  # shadow: pair id -> the row's answer


class RolloutEvidence:
    """What the releases of the pipeline's running rollout answered during the step ``key`` = (rollout id, step)."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.arms: dict[str, _Arm] = {}
        self.started_counters: TritonCounters = {}
        self.lock = threading.Lock()  # ingestion (the monitor's HTTP thread) and the tick (its loop) share the arms

    def reset(self, key: tuple[str, int], releases: tuple[str, str], counters: TritonCounters) -> None:
        self.key = key
        self.arms = {r: _Arm() for r in releases}
        self.started_counters = counters

    def add(
        self,
        release: str,
        latency_s: list[float] | None,
        values: np.ndarray,
        predicted: np.ndarray | None,
        pairs: np.ndarray | None,
    ) -> None:
        """The accepted rows of one samples body of ``release`` (ignored when it is not one of the rollout's)."""
        with self.lock:
            arm = self.arms.get(release)
            if arm is None:
                return
            arm.latency_s.extend(latency_s or ())
            arm.values.append(values)
            if predicted is not None:
                arm.predicted.append(predicted)
            arm.rows += len(values)
            if pairs is not None:
                answers = predicted if predicted is not None else values[:, 0]
                for p, a in zip(pairs.tolist(), answers.tolist(), strict=True):
                    if p >= 0:
                        arm.pairs[int(p)] = float(a)

    def arm(self, release: str, model: str, version: str, counters: TritonCounters, regression: bool) -> Arm:
        a = self.arms[release]
        now, before = counters.get((model, version), {}), self.started_counters.get((model, version), {})
        ok = max(0.0, now.get("success", 0.0) - before.get("success", 0.0))
        failed = max(0.0, now.get("failure", 0.0) - before.get("failure", 0.0))
        values = np.concatenate(a.values) if a.values else np.zeros((0, 1), np.float64)
        predicted = None if regression else (np.concatenate(a.predicted) if a.predicted else np.zeros(0, np.int64))
        return Arm(np.asarray(a.latency_s, np.float64), int(ok), int(failed), values, predicted)

    def paired(self, baseline: str, candidate: str) -> Paired:
        b, c = self.arms[baseline].pairs, self.arms[candidate].pairs
        ids = sorted(b.keys() & c.keys())
        return Paired(np.asarray([b[i] for i in ids]), np.asarray([c[i] for i in ids]))

    def counts(self) -> dict[str, dict[str, int]]:
        return {r: {"rows": a.rows, "requests": len(a.latency_s), "pairs": len(a.pairs)} for r, a in self.arms.items()}


class RolloutController:
    """Decides the rollouts of ``pipeline`` on ``repository`` served by the Triton at ``triton_url`` (``host:port``
    of its HTTP model-control API, used with ``admin_key``); alerts go to ``alerter``."""

    def __init__(
        self,
        repository: Path,
        pipeline: str,
        triton_url: str,
        admin_key: str,
        alerter: Alerter,
        task: str,
        ack_timeout_s: float = 10.0,
    ) -> None:
        self.repository, self.pipeline = Path(repository), pipeline
        self.triton_url, self.admin_key = triton_url, admin_key
        self.alerter = alerter
        self.task = task
        self.ack_timeout_s = ack_timeout_s
        self.evidence = RolloutEvidence()
        self.rollout: Rollout | None = None  # as last read
        self.last: dict[str, Any] = {}  # the status of the last tick (``status``)
        self.decisions: dict[str, int] = {}  # verdict -> count, for the metrics
        self.waiting = ""  # what the running step still waits for

    # ---- ingestion (the monitor's ingest path, under its lock) ----
    def releases(self) -> tuple[str, str] | None:
        r = self.rollout
        if r is None or r.phase != "running":
            return None
        return f"{r.pipeline}:{r.current}", f"{r.pipeline}:{r.candidate}"

    # ---- the tick ----
    def tick(self, counters: TritonCounters, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        r = read_rollout(self.repository, self.pipeline)
        self.rollout = r
        if r is None:
            self.last = {}
            return self.last
        if r.phase == "promoting":
            self._finish(r, r.candidate, "promoted", now)
        elif r.phase == "rolling_back":
            self._finish(r, r.current, r.outcome, now)
        elif r.phase == "running":
            self._step(r, counters, now)
        self.last = self.status(r)
        return self.last

    def _step(self, r: Rollout, counters: TritonCounters, now: float) -> None:
        model = model_names(r.pipeline)["ensemble"]
        base, cand = f"{r.pipeline}:{r.current}", f"{r.pipeline}:{r.candidate}"
        key = (r.id, r.step)
        evidence = self.evidence
        with evidence.lock:
            if evidence.key != key:
                evidence.reset(key, (base, cand), counters)
                return
            regression = self.task == "regression"
            baseline = evidence.arm(base, model, str(r.current), counters, regression)
            candidate = evidence.arm(cand, model, str(r.candidate), counters, regression)
            paired = evidence.paired(base, cand) if r.mode == "shadow" else None
        policy = Policy(**r.policy)
        self.waiting = self._missing(baseline, candidate, paired, policy, bool(counters))
        self._write_evidence(r, None, now)
        if self.waiting:
            return
        decision = decide_step(r.step, baseline, candidate, self.task, policy, paired)
        if decision.verdict == "wait":
            return
        self.decisions[decision.verdict] = self.decisions.get(decision.verdict, 0) + 1
        entry = {"at": now, "share": r.share, "counts": self.evidence.counts(), **decision.as_dict()}
        r.decisions.append(entry)
        self._write_evidence(r, decision, now)
        if decision.verdict == "breach":
            self._roll_back(r, decision, now)
        elif r.mode == "shadow":  # unloaded like a rollback (a loaded higher version would answer unversioned calls)
            r.phase, r.outcome, r.decided_at = "rolling_back", "passed", now
            r.reason = f"shadow passed every check on {candidate.rows} rows"
            write_rollout(self.repository, r)
            self._finish(r, r.current, "passed", now, decision)
        elif r.step + 1 < len(r.shares):
            r.step += 1
            r.step_started_at = now
            write_rollout(self.repository, r)
            self._audit("rollout_step", r, decision)
            log.info("rollout %s: step %d, share %.3f", r.id, r.step, r.share)
        else:
            r.phase, r.decided_at = "promoting", now
            r.reason = f"canary passed all {len(r.shares)} steps"
            write_rollout(self.repository, r)
            self._finish(r, r.candidate, "promoted", now)

    def abort(self, r: Rollout, reason: str, now: float | None = None) -> None:
        """The operator's stop: every request to the current release, the candidate unloaded, ``aborted``."""
        now = time.time() if now is None else now
        r.phase, r.outcome, r.reason, r.decided_at = "rolling_back", "aborted", reason, now
        write_rollout(self.repository, r)
        self._finish(r, r.current, "aborted", now)

    @staticmethod
    def _missing(baseline: Arm, candidate: Arm, paired: Paired | None, policy: Policy, scraped: bool) -> str:
        """What the step still waits for ("" once every check has its data): one look per step, never a peek at
        partial data."""
        missing = []
        for side, a in (("current", baseline), ("candidate", candidate)):
            if a.rows < policy.min_rows:
                missing.append(f"{side} {a.rows}/{policy.min_rows} rows")
            if len(a.latency_s) < policy.min_requests:
                missing.append(f"{side} {len(a.latency_s)}/{policy.min_requests} sampled requests")
            if a.ok_requests + a.failed_requests < policy.min_requests:
                counted = a.ok_requests + a.failed_requests
                missing.append(f"{side} {counted}/{policy.min_requests} requests counted by Triton")
        if paired is not None and len(paired.candidate) < policy.min_rows:
            missing.append(f"{len(paired.candidate)}/{policy.min_rows} shadow pairs")
        if not scraped:
            missing.append(
                "Triton's metrics (the monitor scrapes none: pass --triton-metrics or the server's --workdir)"
            )
        return "; ".join(missing)

    def _roll_back(self, r: Rollout, decision: StepDecision, now: float) -> None:
        r.phase, r.decided_at = "rolling_back", now
        r.reason = "; ".join(c.message for c in decision.breaches)
        write_rollout(self.repository, r)
        self._finish(r, r.current, "rolled_back", now, decision)

    def _finish(self, r: Rollout, keep: int, phase: str, now: float, decision: StepDecision | None = None) -> None:
        """Routing has moved to ``keep`` (written); once the edge acknowledges it, unload the other release, move
        the registry (promotion) and record, then write the terminal ``phase``."""
        acked = wait_for_ack(self.repository, r, self.ack_timeout_s)
        if not acked:
            r.reason += f" (no edge acknowledged routing generation {r.generation} within {self.ack_timeout_s:g} s)"
        try:
            keep_only(self.triton_url, self.admin_key, self.repository, r.pipeline, keep)
        except ReleaseSwitchError as exc:
            # the routing already sends everything to ``keep``; both releases stay loaded: said, and retried next tick
            self._alert("rollout_unload_failed", "warning", f"rollout {r.id} of {r.pipeline}: {exc}", r, decision)
            return
        if phase == "promoted":
            with Registry(self.repository, r.pipeline).locked() as reg:
                Registry.move_pointer(
                    reg, r.candidate, "promote", reason=f"rollout {r.id}: {r.reason}", by=ROLLOUT_USER,
                    rollout=r.id, evidence=r.decisions[-1] if r.decisions else None,
                )  # fmt: skip
        else:
            self._audit(f"rollout_{phase}", r, decision)
        r.phase = phase
        r.decided_at = r.decided_at or now
        write_rollout(self.repository, r)
        if phase == "promoted":
            self._alert("rollout_promoted", "info", f"{r.pipeline}:{r.candidate} promoted: {r.reason}", r, decision)
        elif phase == "aborted":
            self._alert("rollout_aborted", "warning", f"rollout of {r.pipeline}:{r.candidate} aborted: {r.reason}", r,
                        decision)  # fmt: skip
        elif phase == "passed":
            self._alert("rollout_shadow_passed", "info", f"{r.pipeline}:{r.candidate} {r.reason}", r, decision)
        else:
            self._alert(
                "rollout_rolled_back",
                "critical",
                f"{r.pipeline}:{r.candidate} rolled back at step {r.step} (share {r.shares[r.step]:.0%}); "
                f"{r.pipeline}:{r.current} answers everyone: {r.reason}",
                r,
                decision,
            )

    def _audit(self, action: str, r: Rollout, decision: StepDecision | None) -> None:
        with Registry(self.repository, r.pipeline).locked() as reg:
            Registry.record(
                reg, action, r.candidate, by=ROLLOUT_USER, rollout=r.id, mode=r.mode, step=r.step,
                share=r.shares[min(r.step, len(r.shares) - 1)], reason=r.reason,
                evidence=decision.as_dict() if decision is not None else None,
            )  # fmt: skip

    def _alert(self, reason: str, severity: Severity, message: str, r: Rollout, decision: StepDecision | None) -> None:
        details: dict[str, Any] = {"rollout": r.id, "mode": r.mode, "current": r.current, "candidate": r.candidate}
        details["step"] = r.step
        if decision is not None:
            details["checks"] = [c.as_dict() for c in decision.checks]
        self.alerter.emit(Alert(source="monitor", reason=reason, severity=severity, message=message, details=details))

    def _write_evidence(self, r: Rollout, decision: StepDecision | None, now: float) -> None:
        try:
            atomic_write_json(
                evidence_path(self.repository, r.pipeline),
                {"rollout": r.id, "step": r.step, "at": now, "counts": self.evidence.counts(),
                 "waiting_for": self.waiting, "decision": decision.as_dict() if decision is not None else None},
            )  # fmt: skip
        except OSError as exc:
            log.warning("rollout evidence not written: %s", exc)

    def status(self, r: Rollout | None = None) -> dict[str, Any]:
        r = r or self.rollout
        if r is None:
            return {}
        return {
            "id": r.id,
            "mode": r.mode,
            "phase": r.phase,
            "current": r.current,
            "candidate": r.candidate,
            "step": r.step,
            "steps": len(r.shares),
            "share": r.share,
            "counts": self.evidence.counts() if r.phase == "running" else {},
            "waiting_for": self.waiting if r.phase == "running" else "",
            "decisions": r.decisions,
            "reason": r.reason,
        }
