"""What `inferline serve status` says while the server does not serve, and when it serves another release than the
registry's current one (the lines docs/how-to/read-serve-status.md explains), from server records as the supervisor
writes them; nothing is started."""

from __future__ import annotations

from typing import Any

import pytest

from inferline.serving.status import not_serving, warn_behind

CRASH = {"at": "2026-12-07T03:03:35+00:00", "pid": 26319, "cause": "signal SIGKILL", "log_tail": []}


def record(**fields: Any) -> dict[str, Any]:
    return {"pid": 26319, "state": "ready", "last_crash": None, **fields}


def test_a_restart_names_the_server_that_exited_not_the_one_starting() -> None:
    # the supervisor saw the exit: the record still has the dead server's pid
    assert not_serving(record(state="restarting", last_crash=CRASH)) == (
        "down, restarting: tritonserver pid 26319 exited (signal SIGKILL)"
    )
    # the new server is started and not ready yet: the record's pid is the new one's
    assert not_serving(record(pid=26487, state="restarting", last_crash=CRASH)) == (
        "down, restarting: tritonserver pid 26319 exited (signal SIGKILL); the new one is pid 26487"
    )


def test_a_server_starting_or_gone_unseen() -> None:
    assert not_serving(record(state="starting")) == "down, starting: tritonserver pid 26319 is not ready yet"
    # the record says ready, the process is gone, and the supervisor has not seen it yet (at most 0.1 s)
    assert not_serving(record()) == "down, restarting: tritonserver pid 26319 exited"


def served(release: int, state: str = "READY") -> dict[str, Any]:
    return {"release": release, "state": state, "models": ["fraud"]}


def test_a_release_published_or_rolled_back_since_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    warn_behind({"pipelines": {"fraud": served(1)}, "rollouts": {}}, {"fraud": 2}, "status")
    err = capsys.readouterr().err
    assert err.startswith("inferline serve status: warning: pipeline 'fraud' serves release 1, but the registry's")
    assert "`inferline serve apply --pipeline fraud` serves 2" in err
    assert "`inferline export promote 1 --pipeline fraud` keeps 1" in err


@pytest.mark.parametrize(
    ("pipelines", "current", "rollouts"),
    [
        ({"fraud": served(2)}, {"fraud": 2}, {}),  # the current release is served
        ({"fraud": served(1, "UNAVAILABLE")}, {"fraud": 2}, {}),  # not served at all: warn_unavailable's line
        ({"fraud": served(1)}, {}, {}),  # no registry to compare with
        ({"fraud": served(3)}, {"fraud": 2}, {"fraud": {"mode": "canary"}}),  # a rollout serves two releases
    ],
)
def test_nothing_is_said_when_there_is_nothing_to_apply(
    pipelines: dict[str, Any], current: dict[str, int], rollouts: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    warn_behind({"pipelines": pipelines, "rollouts": rollouts}, current, "status")
    assert capsys.readouterr().err == ""
