"""A second pipeline is a new spec module and nothing else: every stage runs it unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import inferline.features.pipelines
from inferline.core.files import atomic_write_parquet
from inferline.export.publish import publish
from inferline.features.spec import load_pipeline_module
from inferline.training.train import train

LOANS = (Path(__file__).parents[1] / "pipelines" / "loans.py").read_text()  # the contract suite checks it too


MODULE = "inferline.features.pipelines.loans"


@pytest.fixture
def loans_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The loans spec as a plugin module of ``inferline.features.pipelines`` for this test only: at teardown the
    imported module, the package's attribute for it and the import system's cache of its folder are gone."""
    assert MODULE not in sys.modules
    plugin_dir = tmp_path / "pipelines"
    plugin_dir.mkdir()
    (plugin_dir / "loans.py").write_text(LOANS)
    monkeypatch.setattr(
        inferline.features.pipelines, "__path__", [*inferline.features.pipelines.__path__, str(plugin_dir)]
    )
    try:
        yield "loans"
    finally:
        sys.modules.pop(MODULE, None)
        vars(inferline.features.pipelines).pop("loans", None)
        sys.path_importer_cache.pop(str(plugin_dir), None)


def test_second_pipeline_trains_gates_and_publishes(loans_pipeline: str, tmp_path: Path) -> None:
    assert "loans" in inferline.features.pipelines.available()
    module = load_pipeline_module(loans_pipeline)
    data = tmp_path / "loans.parquet"
    atomic_write_parquet(data, module.generate(6000, seed=1))
    result = train([data], module.SPEC, tmp_path / "runs", seed=0, progress=False)
    assert result.metrics["holdout"]["roc_auc"] > 0.6
    released = publish(result.run_dir, tmp_path / "repo", load_check=False)
    assert released.parity.passed and released.version == 1
    served = text_format.Parse(
        (tmp_path / "repo" / "loans" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert [i.name for i in served.input] == ["loan_id", "applied_at", "income", "purpose"]
    assert served.backend == "python" and list(served.version_policy.specific.versions) == [1]  # fused (local)
    assert served.parameters["feature_state_from"].string_value == "loans_preprocess"
    assert served.max_batch_size == 64


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import a_package_nobody_installed\n", "its own import failed: No module named 'a_package_nobody_installed'"),
        ("SPEC = (\n", "failed while importing: SyntaxError"),
        ("raise RuntimeError('no config file')\n", "failed while importing: RuntimeError: no config file"),
    ],
)
def test_a_spec_module_whose_own_import_fails_is_one_line(source: str, expected: str, tmp_path: Path) -> None:
    """The user's spec module is there but cannot be imported: one line naming the module and its error (the
    missing package, the syntax error, its exception), exit 1, no traceback."""
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "broken.py").write_text(source)
    done = subprocess.run(
        [sys.executable, "-m", "inferline", "validate", "--pipeline", "userpkg.broken", str(tmp_path / "x.parquet")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "pipeline module 'userpkg.broken'" in done.stderr and expected in done.stderr


def test_a_narrow_integer_tensor_column_must_say_what_its_model_receives() -> None:
    """A UINT8 column without model_dtype would hand the model bytes no PyTorch layer takes: refused at compile
    with the fix (a SpecError, one line at the command line); with model_dtype declared it compiles."""
    from dataclasses import replace

    from inferline.features.contract import compile_contract
    from inferline.features.spec import SpecError

    images = load_pipeline_module("tests.pipelines.byom_images").SPEC
    bare = replace(
        images,
        columns=tuple(
            replace(c, model_dtype=None, preprocess=None) if c.kind == "tensor" else c for c in images.columns
        ),
    )
    with pytest.raises(SpecError, match=r"'image' is UINT8 and declares no model_dtype.*model_dtype='FP32'"):
        compile_contract(bare)
    as_bytes = replace(
        bare, columns=tuple(replace(c, model_dtype="UINT8") if c.kind == "tensor" else c for c in bare.columns)
    )
    assert compile_contract(as_bytes).model_inputs[0].datatype == "UINT8"
