"""A broken release never takes the server down (issue 15, part 6), against a real tritonserver.

``inferline serve up`` on a repository where one pipeline's current release has a config Triton refuses (an output
with ``dims: [ 0 ]``) serves the other pipeline and names the broken one with Triton's reason; with nothing
loadable it exits 1 saying why. ``check_release_loads`` passes a good release and refuses a broken one in a scratch
server that it always stops.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferline.core.errors import UserError
from inferline.export.loadcheck import ReleaseUnloadable, check_release_loads
from inferline.serving.triton_index import ModelState, load_status


def test_check_release_loads_refuses_what_it_cannot_check(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a plain directory name"):
        check_release_loads({"../x": tmp_path})
    with pytest.raises(UserError, match="does not exist"):
        check_release_loads({"m": tmp_path / "missing"})
    with pytest.raises(ReleaseUnloadable, match=r"holds a config\.pbtxt"):
        check_release_loads({"m": tmp_path})
    with pytest.raises(UserError, match="expected one or more of the given models"):
        check_release_loads({"m": tmp_path}, load=["other"])


def test_load_status_per_pipeline_from_the_repository_index() -> None:
    index = [
        ModelState("good", "2", "READY"),
        ModelState("switching", "2", "READY"),
        ModelState("switching", "3", "LOADING"),
        ModelState("loading", "3", "LOADING"),
        ModelState("bad", "2", "UNAVAILABLE", "Invalid argument: dims"),
        ModelState("ens_pre", "4", "READY"),
        ModelState("ens", "1", "UNAVAILABLE", "composing model failed"),
        ModelState("never"),
    ]
    plan = {
        "good": ["good"],
        "switching": ["switching"],
        "loading": ["loading"],
        "bad": ["bad"],
        "ens": ["ens_pre", "ens"],
        "never": ["never"],
        "refused": ["refused"],
    }
    releases = {name: 2 for name in plan} | {"ens": 4}
    status = load_status(index, plan, releases, refused={"refused": "release refused:2 could not be prepared"})
    assert {name: st.state for name, st in status.items()} == {
        "good": "READY",
        "switching": "READY",  # one version ready while another loads: served
        "loading": "LOADING",
        "bad": "UNAVAILABLE",
        "ens": "UNAVAILABLE",
        "never": "UNAVAILABLE",
        "refused": "UNAVAILABLE",
    }
    assert status["bad"].reason == "model 'bad' version 2: Invalid argument: dims"
    assert status["ens"].reason == "model 'ens' version 1: composing model failed"
    assert "gives no reason" in status["never"].reason
    assert status["refused"].reason == "release refused:2 could not be prepared"
    assert status["ens"].release == 4 and status["good"].as_dict() == {
        "release": 2,
        "state": "READY",
        "models": ["good"],
    }
