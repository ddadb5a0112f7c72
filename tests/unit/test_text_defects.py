"""Text damage, Unicode look-alikes, integers arriving as floats and untyped CSV (issue 16, classes 3, 4, 5, 8, 9,
11, 14): each defect one quarantined row with its exact reason, on every path that reads data (files through
validate and training, the batch job, the request path, the monitor's ingestion), and genuine non-ASCII text
never refused."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.features.contract import compile_contract
from inferline.features.dataset import load_validated, quarantine_name
from inferline.features.pipelines import fraud
from inferline.features.spec import SpecError
from inferline.features.state import fit_state
from inferline.features.wire import encode_rows
from tests.defects_cases import _write
from tests.text_defects_cases import DEFECTS, GENUINE, NFD, SPEC, _by_id, _corpus, _expected_quarantine


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_text_and_integer_defects_are_quarantined_with_their_reasons_from_files(tmp_path: Path, suffix: str) -> None:
    frame, expected = _corpus()
    path = tmp_path / f"upstream{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        _write(path, frame)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert report.rows_in == len(frame) == len(valid) + len(quarantine)
    assert len(quarantine) == len(DEFECTS) + 2  # + both copies of the look-alike id
    assert _by_id(quarantine) == _expected_quarantine(expected)
    # genuine text passes untouched; the NFD text is normalized, and the normalization recorded
    described = set(valid["description"].dropna())
    assert set(GENUINE) <= described
    assert unicodedata.normalize("NFC", NFD) in described and NFD not in described
    notes = {(n["column"], n["action"]): n for n in report.files[0]["normalizations"]}
    assert notes[("description", "normalized_nfc")]["rows"] == 1
    cast = "float64_to_int64" if suffix == ".parquet" else "text_to_int64"  # CSV integers are read as their text
    assert notes[("customer_age_days", cast)]["rows"] == len(frame) - 2
    assert str(valid["customer_age_days"].dtype) == "int64"
    assert "NA" in valid["country"].tolist()  # Namibia, not a null
    # the quarantine keeps what arrived: the null stays a null, the fraction its value
    ages = dict(zip(quarantine["transaction_id"], quarantine["customer_age_days"], strict=True))
    age_ids = {reason: tid for tid, reason in expected.items() if reason.startswith("customer_age_days")}
    if suffix == ".parquet":
        assert np.isnan(ages[age_ids["customer_age_days:null"]])
        assert ages[age_ids["customer_age_days:not_integer"]] == 3.5
    else:  # the cells as they arrived: an empty cell, and the text
        assert pd.isna(ages[age_ids["customer_age_days:null"]])
        assert ages[age_ids["customer_age_days:not_integer"]] == "3.5"


def test_the_request_path_gives_every_defect_the_same_reason(tmp_path: Path) -> None:
    frame, expected = _corpus()
    contract = compile_contract(SPEC, fit_state(fraud.generate(2000, seed=1), SPEC))
    rows = frame.drop(columns=[SPEC.label])
    refused: dict[int, str] = {}  # what the client does: the INT64 wire has no null
    arrays = encode_rows(rows, SPEC, refused)
    features, status = contract.featurize(arrays)
    for row, reason in refused.items():
        status[row] = reason if status[row] == "ok" else status[row]
    got = {str(rows.loc[i, "transaction_id"]): str(s) for i, s in enumerate(status) if s != "ok"}
    want = dict(expected)
    want[unicodedata.normalize("NFD", "tx-é-60")] = "transaction_id:duplicate"  # the later copy in one request
    got.pop(unicodedata.normalize("NFC", "tx-é-60"), None)  # the request path marks copies after the first
    assert got == want
    # the NFD description scores exactly as its NFC form
    nfc_row = rows.iloc[[len(GENUINE)]].assign(description=unicodedata.normalize("NFC", NFD))
    again, _ = contract.featurize(encode_rows(nfc_row, SPEC))
    np.testing.assert_array_equal(features.numeric[len(GENUINE)], again.numeric[0])


def test_the_monitor_featurizes_nfd_text_as_its_nfc_form() -> None:
    """The monitor's ingestion featurizes samples with the release's contract on the request path: an NFD value
    and its NFC form give one feature value, and damaged text is a reason, not a crash."""
    from inferline.features.wire import from_json_columns, to_json_columns

    contract = compile_contract(SPEC, fit_state(fraud.generate(2000, seed=1), SPEC))
    rows = pd.concat([fraud.generate(1, seed=9).drop(columns=[SPEC.label])] * 4, ignore_index=True)
    rows["transaction_id"] = [f"tx-{i}" for i in range(4)]
    rows["description"] = [NFD, unicodedata.normalize("NFC", NFD), "Café MÃ¼ller", "\ufeffx"]
    columns = json.loads(json.dumps(to_json_columns(encode_rows(rows, SPEC))))  # through JSON, as samples travel
    features, status = contract.featurize(from_json_columns(columns, SPEC))
    np.testing.assert_array_equal(features.numeric[0], features.numeric[1])
    assert list(status) == ["ok", "ok", "description:mojibake", "description:bom"]
    columns["customer_age_days"][0] = None
    with pytest.raises(ValueError, match=r"customer_age_days.*row 0.*INT64 wire has no null"):
        from_json_columns(columns, SPEC)


def test_empty_and_header_only_csv_pass_like_a_zero_row_parquet_file(tmp_path: Path) -> None:
    frame = fraud.generate(30, seed=2)
    header = tmp_path / "header-only.csv"
    frame.head(0).to_csv(header, index=False)
    empty_parquet = _write(tmp_path / "empty.parquet", frame.head(0))
    no_descriptions = tmp_path / "no-descriptions.csv"
    frame.assign(description=None).to_csv(no_descriptions, index=False)
    valid, report = load_validated([header, empty_parquet, no_descriptions], SPEC)
    assert [f["rows_in"] for f in report.files] == [0, 0, 30]
    assert report.rows_valid == 30 == len(valid) and valid["description"].isna().all()


def test_declared_text_policies_override_the_defaults() -> None:
    from dataclasses import replace

    from inferline.features.rules import max_length
    from inferline.features.spec import Column, spec_from_dict
    from inferline.features.validation import validate_frame
    from inferline.features.vocabulary import CODE_POINT_SETS

    column = Column("note", "text", required=False, normalization="refuse", rules=(max_length(5),))
    assert [r.op for r in column.rules].count("max_length") == 1 and column.rules[0].args == (5,)
    assert any(r.op == "normalized" for r in column.rules)
    spec = replace(
        SPEC, columns=(*SPEC.columns[:-2], replace(SPEC.columns[-2], normalization="refuse"), SPEC.columns[-1])
    )
    frame = fraud.generate(10, seed=3)
    frame.loc[0, "description"] = NFD
    result = validate_frame(frame, spec)
    assert result.reason_counts == {"description:not_nfc": 1}
    assert spec_from_dict(spec.describe()).feature_hash() == spec.feature_hash()  # the policy is in the snapshot
    assert set(CODE_POINT_SETS) >= {"c0", "c1", "zero_width", "bom", "replacement"}
    with pytest.raises(SpecError, match="integer column cannot be optional"):
        Column("n", "integer", required=False)


def test_training_quarantines_the_same_rows_and_records_why(tmp_path: Path) -> None:
    from collections import Counter

    from inferline.training.train import train

    frame, expected = _corpus(2500)
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    result = train([path], SPEC, tmp_path / "runs", seed=0, epochs=1, max_invalid_share=1.0, progress=False)
    data = json.loads((result.run_dir / "run.json").read_text())["data"]
    counts = Counter(expected.values())
    counts["transaction_id:duplicate"] = 2
    assert data["files"][0]["reasons"] == dict(counts)
    assert data["rows_in"] == 2500 == data["rows_valid"] + data["rows_quarantined"]


def test_a_nul_never_hides_behind_an_earlier_value(tmp_path: Path) -> None:
    """pandas' string hashing ends a value at a NUL: 'Uber\\x00trip' must not pass as an earlier 'Uber', and two ids
    that differ only after a NUL are not duplicates."""
    frame = fraud.generate(6, seed=4)
    frame["transaction_id"] = ["tx-1", "tx-1\x00b", "tx-1\x00c", "tx-4", "tx-5", "tx-6"]
    frame["description"] = ["Uber", "Uber", "Uber", "Uber", "Uber\x00trip", "Uber"]
    _, report = load_validated([_write(tmp_path / "nul.parquet", frame)], SPEC, max_invalid_share=1.0)
    assert report.files[0]["reasons"] == {"transaction_id:control_chars": 2, "description:control_chars": 1}


def test_the_monitor_joins_a_label_to_its_answer_across_normalization_forms() -> None:
    from inferline.monitor.labels import PredictionLog

    log = PredictionLog(SPEC, window_rows=10)
    nfd = unicodedata.normalize("NFD", "tx-é-1")
    log.log(np.array([nfd.encode()], dtype=object), np.array([1]), "fraud:1")
    assert log.join({"labels": [{"transaction_id": unicodedata.normalize("NFC", nfd), "label": 1}]}) == {
        "joined": 1,
        "unmatched": 0,
    }
