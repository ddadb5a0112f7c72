"""Text damage, Unicode look-alikes, integers arriving as floats and untyped CSV (issue 16, classes 3, 4, 5, 8, 9,
11, 14): each defect one quarantined row with its exact reason, on every path that reads data (files through
validate and training, the batch job, the request path, the monitor's ingestion), and genuine non-ASCII text
never refused."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from inferline.features.contract import compile_contract
from inferline.features.dataset import load_validated, quarantine_name
from inferline.features.pipelines import fraud
from inferline.features.spec import SpecError
from inferline.features.state import fit_state
from inferline.features.validation import FileLevelError
from inferline.features.wire import encode_rows
from tests.system.conftest import score_batch
from tests.system.test_defects import _cli, _write

SPEC = fraud.SPEC
GENUINE = ("São Paulo", "Dvořák", "東京 駅", "Привет мир", "می\u200cخواهم", "Bäckerei Schmidt", "Ελληνικά", "👍🏽")

# row changes -> the one reason each row must get, on every path
DEFECTS: list[tuple[dict[str, Any], str]] = [
    ({"description": "Uber\x00trip"}, "description:control_chars"),
    ({"description": "Café MÃ¼ller"}, "description:mojibake"),  # mojibake beside genuine non-ASCII
    ({"description": "ok\u0085then"}, "description:c1_control_chars"),
    ({"description": "zero\u200bwidth"}, "description:zero_width_chars"),
    ({"description": "\ufeffStarbucks"}, "description:bom"),
    ({"description": "x" * 1_000_000}, "description:too_long"),
    ({"transaction_id": "tx-\ufffd-1"}, "transaction_id:replacement_char"),
    ({"transaction_id": "tx-\x00-2"}, "transaction_id:control_chars"),
    ({"transaction_id": "tx-\u200b-3"}, "transaction_id:zero_width_chars"),
    ({"transaction_id": "tx-\u202e-4"}, "transaction_id:bidi_controls"),
    ({"transaction_id": "t" * 300}, "transaction_id:too_long"),
    ({"customer_age_days": None}, "customer_age_days:null"),
    ({"customer_age_days": 3.5}, "customer_age_days:not_integer"),
]
NFD = unicodedata.normalize("NFD", "Café de Flore")


def _corpus(n: int = 120) -> tuple[pd.DataFrame, dict[str, str]]:
    """Valid rows with one defect per row (their reasons by id), genuine non-ASCII descriptions, one NFD
    description, a pair of ids equal only after NFC, and "NA" (Namibia) as a country."""
    frame = fraud.generate(n, seed=5)
    frame["customer_age_days"] = frame["customer_age_days"].astype("float64")  # what a null makes of int64
    frame.loc[: len(GENUINE) - 1, "description"] = list(GENUINE)
    frame.loc[len(GENUINE), "description"] = NFD
    frame.loc[len(GENUINE) + 1, "country"] = "NA"
    frame.loc[len(GENUINE) + 1, "currency"] = "NAD"
    expected: dict[str, str] = {}
    for i, (changes, reason) in enumerate(DEFECTS, start=20):
        for column, value in changes.items():
            frame.loc[i, column] = value
        expected[str(frame.loc[i, "transaction_id"])] = reason
    frame.loc[60, "transaction_id"] = unicodedata.normalize("NFC", "tx-é-60")
    frame.loc[61, "transaction_id"] = unicodedata.normalize("NFD", "tx-é-60")
    return frame, expected


def _by_id(quarantine: pd.DataFrame) -> dict[str, str]:
    return {
        unicodedata.normalize("NFC", str(k)): str(v)
        for k, v in zip(quarantine["transaction_id"], quarantine["_reasons"], strict=True)
    }


def _expected_quarantine(expected: dict[str, str]) -> dict[str, str]:
    out = {unicodedata.normalize("NFC", k): v for k, v in expected.items()}
    out[unicodedata.normalize("NFC", "tx-é-60")] = "transaction_id:duplicate"  # both copies: one key
    return out


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


def test_batch_quarantines_every_defect_with_its_reason(published, dask_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    frame, expected = _corpus()
    path = _write(tmp_path / "upstream.parquet", frame.drop(columns=[SPEC.label]))
    report = score_batch(published, dask_cluster, [path], tmp_path / "out", max_invalid_share=1.0)
    assert report.rows_in == len(frame) == report.rows_predicted + report.rows_quarantined
    quarantine = pd.read_parquet(tmp_path / "out" / "_quarantine")
    assert _by_id(quarantine) == _expected_quarantine(expected)
    predicted = pd.read_parquet(tmp_path / "out")
    assert set(predicted["transaction_id"]).isdisjoint(set(quarantine["transaction_id"]))


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


def test_the_cli_reports_text_defects_without_a_traceback(tmp_path: Path) -> None:
    frame, _ = _corpus()
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    done = _cli("validate", "--pipeline", "fraud", "--quarantine", str(tmp_path / "q"), str(path))
    assert done.returncode == 1, done.stderr  # above the allowed invalid share, named per reason
    assert "Traceback" not in done.stderr and "TypeError" not in done.stderr and "AttributeError" not in done.stderr
    assert "description:mojibake" in done.stderr


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
