"""``inferline check PIPELINE`` and the public checks (``inferline.features.checks``) on a user's pipeline: every
check passes on the shipped and the test pipelines, a spec whose kernel's two forms disagree fails that check with a
one-line reason and exit 1, and a pipeline that is not there is one line and exit 1, never a traceback.

The command runs with a small hypothesis budget (``--examples``): the full budget runs in tests/unit/test_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from inferline.cli import main
from inferline.features.checks import Pipeline, check_names, iter_checks, run_checks
from tests.pipelines import loans

EXAMPLES = ["--examples", "5"]

# loans with its income feature computed by a kernel of its own whose vector form is off by one from its scalar form
BROKEN = """
from dataclasses import replace

import numpy as np

from inferline.features.kernels import Kernel
from inferline.features.spec import FeatureDef
from tests.pipelines.loans import SPEC as LOANS, generate


def _scalar(v, p):
    return 0.0 if v is None or v != v else float(v) / 1e5


def _vector(xp, x, p):
    return xp.nan_to_num(x / 1e5, nan=0.0) + 1.0


scaled = Kernel("scaled", frozenset({"numeric"}), "numeric", _scalar, _vector, "income / 1e5")
SPEC = replace(
    LOANS,
    name="broken_loans",
    features=(FeatureDef("scaled_income", "userpkg.broken:scaled", "income"), *LOANS.features[1:]),
)
"""


def _inferline(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python -m inferline ARGV`` from the repository root (tests.pipelines importable), with ``tmp_path`` on
    PYTHONPATH for a user's package."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    return subprocess.run(
        [sys.executable, "-m", "inferline", *argv], capture_output=True, text=True, timeout=300, cwd=root, env=env
    )


@pytest.mark.parametrize("pipeline", ["fraud", "tests.pipelines.loans", "tests.pipelines.byom_images"])
def test_every_check_passes_on_a_good_pipeline(pipeline: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", pipeline, *EXAMPLES]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[1:-1]] == [["passed", name] for name in check_names()]
    assert lines[-1].endswith(f"all {len(check_names())} checks passed")


def test_a_broken_spec_fails_its_check_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "broken.py").write_text(BROKEN)
    only = ["--only", "spec_round_trip", "--only", "kernels_agree", "--only", "rules_agree"]
    done = _inferline(["check", "userpkg.broken", *only, *EXAMPLES], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith("FAILED  kernels_agree"), done.stdout
    assert "AssertionError: " in failed[0] and "Failing test case: " in failed[0], failed[0]
    assert "passed  rules_agree" in done.stdout and "passed  spec_round_trip" in done.stdout  # the rest still ran
    assert len(lines) == 3 + 2  # the heading, one line per check, the summary
    assert lines[-1].startswith("broken_loans: ") and "kernels_agree" in lines[-1]


@pytest.mark.parametrize("pipeline", ["userpkg.nosuch", "nosuch"])
def test_a_missing_pipeline_is_one_line_and_exit_1(pipeline: str, tmp_path: Path) -> None:
    done = _inferline(["check", pipeline], tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"no pipeline {pipeline!r}" in done.stderr


def test_an_unknown_check_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["check", "fraud", "--only", "nosuch"])
    assert done.value.code == 2 and "argument --only: got 'nosuch'" in capsys.readouterr().err


def test_run_checks_reports_a_generator_that_ignores_its_seed() -> None:
    """The API on a ``Pipeline`` built by hand: only the named check runs, and it fails with the reason."""
    counter = iter(range(10**6))

    def unseeded(n_rows: int, seed: int = 0) -> pd.DataFrame:
        return loans.generate(n_rows, seed=next(counter))

    report = run_checks(Pipeline(loans.SPEC, unseeded), only=["generate_is_deterministic", "spec_round_trip"])
    assert [(r.check, r.passed) for r in report.results] == [
        ("generate_is_deterministic", False),
        ("spec_round_trip", True),
    ]
    assert "generate(200, seed=3) called twice" in str(report.failed[0].reason)
    assert "\n" not in report.failed[0].line() and not report.passed
    assert [c.name for c in iter_checks(loans)] == check_names()


def test_the_checks_run_without_pytest() -> None:
    """pytest is no dependency of the package: with it unimportable, the checks load and run (hypothesis imports
    it only where it is installed)."""
    code = (
        "import sys; sys.modules['pytest'] = sys.modules['_pytest'] = None\n"
        "from inferline.features.checks import run_checks\n"
        "assert run_checks('fraud', only=['spec_round_trip', 'rules_agree'], examples=3).passed"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
