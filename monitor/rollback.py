"""The rollback controller: when a critical rule opens an incident, serve the previous release again.

Safe by design:
- it acts only on an incident a critical rule opened, and rules never fire on absent or NaN data (``rules``);
- one rollback per incident, and none within ``cooldown_s`` of the last one (no flapping between two releases);
- the previous release is checked against its manifest before the server is touched, and the switch itself
  (``serving.control.switch_release``) keeps the served release when anything fails; either way the controller
  alerts and the current release keeps serving;
- the registry's pointer moves only after the server serves the previous release, with an audit entry naming the
  rules that fired.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from inferline.core.alerts import Alert, Alerter, Severity
from inferline.monitor.rules import Incident
from inferline.release.registry import Registry, RegistryError
from inferline.release.switch import ReleaseSwitchError, switch_release

__all__ = ["ROLLBACK_USER", "RollbackController"]

ROLLBACK_USER = "inferline-monitor"


class RollbackController:
    def __init__(
        self,
        repository: Path,
        pipeline: str,
        triton_url: str,
        admin_key: str,
        alerter: Alerter,
        cooldown_s: float = 900.0,
    ) -> None:
        self.repository, self.pipeline = Path(repository), pipeline
        self.triton_url, self.admin_key = triton_url, admin_key
        self.alerter = alerter
        self.cooldown_s = cooldown_s
        self.last_rollback = -float("inf")
        self.rollbacks = 0
        self.failures = 0

    def _alert(self, reason: str, severity: Severity, message: str, **details: Any) -> None:
        self.alerter.emit(Alert(source="monitor", reason=reason, severity=severity, message=message, details=details))

    def handle(self, incident: Incident, now: float | None = None) -> dict[str, Any]:
        """Roll back for a newly opened incident (at most once); the outcome is also kept on the incident."""
        now = time.time() if now is None else now
        if incident.rollback is not None:
            return incident.rollback
        registry = Registry(self.repository, self.pipeline)
        current, previous = registry.current, registry.previous
        outcome: dict[str, Any] = {"incident": incident.id, "rules": incident.rules, "from": current, "to": previous}
        if now - self.last_rollback < self.cooldown_s:
            outcome["action"] = "skipped: cooldown"
            self._alert(
                "rollback_skipped",
                "warning",
                f"incident {incident.id} ({', '.join(incident.rules)}): a rollback happened "
                f"{now - self.last_rollback:.0f} s ago (cooldown {self.cooldown_s:.0f} s); {self.pipeline}:{current} "
                "keeps serving",
                **outcome,
            )
        elif previous is None:
            outcome["action"] = "failed: no previous release"
            self.failures += 1
            self._alert(
                "rollback_failed",
                "critical",
                f"incident {incident.id} ({', '.join(incident.rules)}): {self.pipeline} has no previous release; "
                f"{self.pipeline}:{current} keeps serving",
                **outcome,
            )
        else:
            try:
                result = switch_release(self.triton_url, self.admin_key, self.repository, self.pipeline, previous)
            except (RegistryError, ReleaseSwitchError, OSError) as exc:
                outcome["action"] = f"failed: {exc}"
                self.failures += 1
                self._alert(
                    "rollback_failed",
                    "critical",
                    f"incident {incident.id} ({', '.join(incident.rules)}): rollback of {self.pipeline} to "
                    f"{previous} failed, {self.pipeline}:{current} keeps serving: {exc}",
                    **outcome,
                )
            else:
                with registry.locked() as reg:
                    reason = f"incident {incident.id}: {', '.join(incident.rules)}"
                    Registry.move_pointer(reg, previous, "rollback", reason=reason, by=ROLLBACK_USER)
                self.last_rollback = now
                self.rollbacks += 1
                outcome.update(action="rolled back", switch=asdict(result))
                self._alert(
                    "rollback_completed",
                    "critical",
                    f"incident {incident.id} ({', '.join(incident.rules)}): {self.pipeline} rolled back from "
                    f"{current} to {previous} in {result.seconds:.1f} s",
                    **outcome,
                )
        incident.rollback = outcome
        return outcome
