"""``inferline serve status``, and the server record every ``serve`` command reads: is the service up, and which
releases does it serve now.

Apart from the command line so that ``serve`` parses and dispatches only; ``serve up`` (``serving.daemon``) prints its
ready record with ``print_ready`` from here. The status line and exit code: 0 serving (the record as JSON), 2 down
but restarting (or up and not answering), 3 down.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from inferline.core.processes import alive
from inferline.core.secrets import admin_key
from inferline.release.registry import RegistryError, published_pipelines
from inferline.serving.client import ready_models
from inferline.serving.server import read_state
from inferline.serving.triton_index import fix_hint, load_status, repository_index

__all__ = [
    "live_pipelines",
    "loaded_versions",
    "not_serving",
    "print_ready",
    "read_record",
    "service_pid",
    "status",
    "warn_behind",
    "warn_unavailable",
]


def read_record(workdir: Path) -> dict[str, Any] | None:
    return read_state(
        workdir, "if no server runs from this work directory, delete it; else pass that server's --workdir"
    )


def service_pid(state: dict[str, Any]) -> int:
    """The process that owns the service: the supervisor (records written before it existed: the server)."""
    return int(state.get("supervisor_pid", state["pid"]))


def loaded_versions(url: str, key: str) -> list[dict[str, Any]]:
    return ready_models(url, key)


def warn_unavailable(record: dict[str, Any], command: str) -> None:
    """One line on stderr per pipeline the server could not load: which release, Triton's reason, what to do."""
    pipelines = record.get("pipelines") or {}
    for name, reason in (record.get("unavailable") or {}).items():
        release = (pipelines.get(name) or {}).get("release")
        print(
            f"inferline serve {command}: warning: pipeline {name!r} (release {release}) is not served, the others "
            f"are: {reason.rstrip('.')}. {fix_hint(name)}",
            file=sys.stderr,
        )


def warn_behind(record: dict[str, Any], current: dict[str, int], command: str) -> None:
    """One line on stderr per served pipeline whose release is not the registry's current one (``current``): a
    publish, promote or rollback since, not applied to the running server yet (a restart after a crash would switch
    it). A pipeline in a rollout serves two releases on purpose and is left out."""
    rollouts = record.get("rollouts") or {}
    for name, served in (record.get("pipelines") or {}).items():
        wanted = current.get(name)
        if served.get("state") != "READY" or wanted is None or served.get("release") == wanted or name in rollouts:
            continue
        print(
            f"inferline serve {command}: warning: pipeline {name!r} serves release {served.get('release')}, but the "
            f"registry's current release is {wanted} (`inferline export history` says what moved it); "
            f"`inferline serve apply --pipeline {name}` serves {wanted}, `inferline export promote "
            f"{served.get('release')} --pipeline {name}` keeps {served.get('release')}",
            file=sys.stderr,
        )


def print_ready(record: dict[str, Any], started: float, key: str) -> None:
    loaded = loaded_versions(record["http"], key)
    print(json.dumps({**record, "ready_s": round(time.monotonic() - started, 2), "loaded": loaded}, indent=2))
    sys.stdout.flush()
    warn_unavailable(record, "up")


def live_pipelines(state: dict[str, Any], key: str) -> dict[str, Any]:
    """``pipelines`` and ``unavailable`` of the server record, read again from the server's repository index: a
    pipeline loaded since (``serve apply``) is READY now. One that never reached Triton keeps its recorded reason."""
    recorded: dict[str, Any] = state.get("pipelines") or {}
    if not recorded:  # a record written before load statuses were kept
        return {}
    plan = {name: list(p.get("models", [])) for name, p in recorded.items()}
    releases = {name: int(p["release"]) for name, p in recorded.items() if p.get("release") is not None}
    index = repository_index(state["http"], key)
    handed = {m.name for m in index if m.state}
    refused = {
        name: str(recorded[name].get("reason", ""))
        for name, models in plan.items()
        if recorded[name].get("reason") and not handed.intersection(models)
    }
    live = load_status(index, plan, releases, refused)
    return {
        "pipelines": {name: st.as_dict() for name, st in live.items()},
        "unavailable": {name: st.reason for name, st in live.items() if st.state != "READY"},
    }


def not_serving(state: dict[str, Any]) -> str:
    """The status line of a live supervisor whose tritonserver does not serve now: it is starting, restarting after
    the crash ``last_crash`` records (the record's ``pid`` is then the new server's once it is started), or it
    exited and the supervisor has not seen it yet."""
    crash = state.get("last_crash") or {}
    if state.get("state") == "starting":
        return f"down, starting: tritonserver pid {state['pid']} is not ready yet"
    if state.get("state") == "restarting" and crash:
        started = f"; the new one is pid {state['pid']}" if state["pid"] != crash.get("pid") else ""
        return f"down, restarting: tritonserver pid {crash.get('pid')} exited ({crash.get('cause')}){started}"
    return f"down, restarting: tritonserver pid {state['pid']} exited"


def _rollouts(state: dict[str, Any]) -> dict[str, Any]:
    """The rollout of each served pipeline that has one routed now (``inferline rollout status`` has the evidence)."""
    from inferline.release.rollout import RolloutError, read_rollout

    found: dict[str, Any] = {}
    for pipeline in state.get("pipelines") or {}:
        try:
            r = read_rollout(Path(state["repository"]), pipeline)
        except (OSError, RolloutError):
            continue
        if r is not None and r.routed:
            found[pipeline] = {"id": r.id, "mode": r.mode, "phase": r.phase, "current": r.current,
                               "candidate": r.candidate, "step": r.step, "share": r.share}  # fmt: skip
    return found


def status(args: argparse.Namespace) -> int:
    state = read_record(args.workdir)
    if not state:
        print("down (no server started from this work directory)")
        return 3
    owner = service_pid(state)
    if state.get("state") == "failed" and state.get("failure"):  # it gave up on purpose, saying why
        print(f"down: {state['failure']} (see {state['log']})")
        return 3
    if not alive(owner):
        if owner != state["pid"] and alive(state["pid"]):
            print(
                f"down (stopping): supervisor pid {owner} is gone (crashed or killed); tritonserver pid "
                f"{state['pid']} is draining and follows it; see {state['log']}"
            )
        else:
            print(f"down: pid {owner} is gone (crashed or killed); see {state['log']}")
        return 3
    degraded = state.get("degraded")  # past the restart budget: it keeps restarting with backoff
    if degraded and (state.get("state") != "degraded" or not alive(state["pid"]) or state.get("up") is False):
        crash = state.get("last_crash") or {}
        print(f"down, degraded, restarting with backoff: {degraded} (last: {crash.get('cause')})")
        return 2
    if degraded:
        print(f"inferline serve status: warning: degraded: {degraded}", file=sys.stderr)
    elif state.get("state") != "ready" or not alive(state["pid"]):
        print(not_serving(state))
        return 2
    key = admin_key(args.workdir)
    try:
        loaded = loaded_versions(state["http"], key)
        live = live_pipelines(state, key)
    except Exception as exc:  # noqa: BLE001 - any failure to answer is "not answering"
        print(f"up but not answering: pid {state['pid']}, http {state['http']}: {exc}")
        return 2
    record = {**state, **live, "loaded": loaded, "rollouts": _rollouts(state)}
    print(json.dumps(record, indent=2))
    warn_unavailable(record, "status")
    try:
        current = published_pipelines(Path(state["repository"]))
    except (OSError, ValueError, KeyError, RegistryError):  # a repository moved or unreadable since: no comparison
        current = {}
    warn_behind(record, current, "status")
    return 0
