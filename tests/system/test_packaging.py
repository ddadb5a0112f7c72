"""One distribution, one namespace: the wheel installs ``inferline`` and nothing else at the top level, and no
generic stage name (``features``, ``monitor``, ...) is importable from the installed environment."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import inferline

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_has_one_top_level_package(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("inferline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"inferline"}
    for stage in inferline.STAGES:
        assert f"inferline/{stage}/__init__.py" in names
    # files the stages read at run time travel with the package
    assert "inferline/serving/backend/preprocess.py" in names and "inferline/serving/openapi/kserve-v2.yaml" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "inferline = inferline.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_no_generic_top_level_module_is_importable(tmp_path: Path) -> None:
    # from a neutral directory: in the checkout its folders would be found through the current directory
    probe = (
        "import importlib, importlib.util, sys\n"
        f"stages = {inferline.STAGES!r}\n"
        "print([s for s in stages if importlib.util.find_spec(s) is not None])\n"
        "print([s for s in stages if importlib.util.find_spec('inferline.' + s) is None])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]"], "generic names importable / namespaced stages missing"
