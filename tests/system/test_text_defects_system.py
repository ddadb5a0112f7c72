"""Text damage, Unicode look-alikes, integers arriving as floats and untyped CSV (issue 16, classes 3, 4, 5, 8, 9,
11, 14): each defect one quarantined row with its exact reason, on every path that reads data (files through
validate and training, the batch job, the request path, the monitor's ingestion), and genuine non-ASCII text
never refused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from inferline.features.dataset import load_validated
from inferline.features.pipelines import fraud
from inferline.features.validation import FileLevelError
from tests.defects_cases import _cli, _write
from tests.system.conftest import score_batch
from tests.text_defects_cases import SPEC, _by_id, _corpus, _expected_quarantine


def test_batch_quarantines_every_defect_with_its_reason(published, dask_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frame, expected = _corpus()
    path = _write(tmp_path / "upstream.parquet", frame.drop(columns=[SPEC.label]))
    report = score_batch(published, dask_cluster, [path], tmp_path / "out", max_invalid_share=1.0)
    assert report.rows_in == len(frame) == report.rows_predicted + report.rows_quarantined
    quarantine = pd.read_parquet(tmp_path / "out" / "_quarantine")
    assert _by_id(quarantine) == _expected_quarantine(expected)
    predicted = pd.read_parquet(tmp_path / "out")
    assert set(predicted["transaction_id"]).isdisjoint(set(quarantine["transaction_id"]))


def test_the_cli_reports_text_defects_without_a_traceback(tmp_path: Path) -> None:
    frame, _ = _corpus()
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    done = _cli("validate", "--pipeline", "fraud", "--quarantine", str(tmp_path / "q"), str(path))
    assert done.returncode == 1, done.stderr  # above the allowed invalid share, named per reason
    assert "Traceback" not in done.stderr and "TypeError" not in done.stderr and "AttributeError" not in done.stderr
    assert "description:mojibake" in done.stderr


def test_a_latin1_csv_is_one_file_level_error_that_names_the_encoding(tmp_path: Path) -> None:
    frame = fraud.generate(30, seed=2).assign(description="Café Müller")
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False, encoding="latin-1")
    with pytest.raises(FileLevelError, match=r"not UTF-8.*Caf.*iconv -f cp1252 -t utf-8"):
        load_validated([path], SPEC)
    done = _cli("validate", "--pipeline", "fraud", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr and "not UTF-8" in done.stderr
    # one stray byte in an otherwise UTF-8 file stays a row's reason
    mixed = tmp_path / "mixed.csv"
    text = fraud.generate(30, seed=2).assign(description="Müller").to_csv(index=False).encode()
    mixed.write_bytes(text.replace("Müller".encode(), b"M\xfcller", 1))
    _, report = load_validated([mixed], SPEC, max_invalid_share=1.0)
    assert report.files[0]["reasons"] == {"description:invalid_utf8": 1}
