"""A corpus of injected defects, mixed into valid data: every one caught with its reason, no valid row lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.features.dataset import load_validated, quarantine_name
from inferline.features.pipelines import fraud
from inferline.features.validation import FileLevelError, validate_frame
from tests.defects_cases import DEFECTS, _far_future, _valid, _write

SPEC = fraud.SPEC


def test_every_injected_defect_is_caught_with_its_reason() -> None:
    frame = _valid()
    rng = np.random.default_rng(0)
    rows = rng.choice(len(frame), size=len(DEFECTS) + 1, replace=False)
    expected: dict[str, set[str]] = {}
    for row, (changes, reasons) in zip(rows, DEFECTS, strict=False):
        for column, value in changes.items():
            frame.loc[row, column] = value
        expected[str(frame.loc[row, "transaction_id"])] = reasons
    # a duplicate id: both rows carry it, both are quarantined
    dup_source, dup_row = rows[-1], int(rng.choice(np.setdiff1d(np.arange(len(frame)), rows)))
    frame.loc[dup_row, "transaction_id"] = frame.loc[dup_source, "transaction_id"]
    dup_id = str(frame.loc[dup_source, "transaction_id"])

    result = validate_frame(frame, SPEC, source="corpus.parquet")

    got: dict[str, list[set[str]]] = {}
    for tid, reasons in zip(result.quarantine["transaction_id"], result.quarantine["_reasons"], strict=True):
        got.setdefault(str(tid), []).append(set(reasons.split(";")))
    assert got.pop(dup_id) == [{"transaction_id:duplicate"}] * 2
    assert {k: v[0] for k, v in got.items()} == expected
    assert result.rows_in == len(frame) == result.rows_valid + result.rows_quarantined
    assert result.rows_quarantined == len(DEFECTS) + 2, "no valid row quarantined"
    counts = Counter(r for reasons in expected.values() for r in reasons)
    counts["transaction_id:duplicate"] = 2
    assert result.reason_counts == dict(counts)
    note = next(n for n in result.normalizations if n["column"] == "event_time")
    assert note["action"] == "parsed_iso8601_to_utc" and note["offsets"] == ["+0000", "+0200", "-0500"]
    assert str(result.valid["event_time"].dtype) == "datetime64[ns, UTC]"


def _all_null_amount(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(amount=None)


@pytest.mark.parametrize(
    ("name", "break_it", "expected"),
    [
        ("missing", lambda f: f.drop(columns=["country"]), "'country': missing"),
        ("extra", lambda f: f.assign(ip_address="10.0.0.1"), "'ip_address': unexpected column"),
        ("renamed", lambda f: f.rename(columns={"country": "country_code"}), "'country': missing"),
        (
            "numbers_as_strings",
            lambda f: f.assign(amount=f["amount"].astype(str)),
            "'amount': numbers arrive as text (received 200 value(s) as text, such as '",
        ),
        ("all_null_typed_null", _all_null_amount, "'amount': dtype changed (received object, expected float64 (fix"),
        (
            "epoch_ints",
            lambda f: f.assign(event_time=f["event_time"].astype("int64") // 10**9),
            "'event_time': dtype changed (received int64",
        ),
    ],
)
def test_file_level_breaks_name_file_and_column(tmp_path: Path, name: str, break_it, expected: str) -> None:
    frame = break_it(fraud.generate(200, seed=3))
    path = _write(tmp_path / f"part-{name}.parquet", frame)
    with pytest.raises(FileLevelError) as info:
        load_validated([path], SPEC, quarantine_dir=tmp_path / "q")
    assert str(path) in str(info.value)
    assert expected in str(info.value)
    assert not (tmp_path / "q").exists(), "a refused file writes no partial quarantine"


def test_invalid_utf8_bytes_in_csv_are_quarantined_per_row(tmp_path: Path) -> None:
    frame = _valid(50)
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False, encoding="utf-8")
    raw = path.read_bytes().replace(b"Netflix.com", b"Netfl\xffx.com", 1)
    assert raw != path.read_bytes(), "the corpus row holds the text to damage"
    path.write_bytes(raw)
    damaged_id = frame.loc[frame["description"] == "Netflix.com", "transaction_id"].iloc[0]
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q")
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert quarantine["transaction_id"].tolist() == [damaged_id]
    assert quarantine["_reasons"].tolist() == ["description:invalid_utf8"]
    assert report.rows_in == 50 == report.rows_valid + report.rows_quarantined == len(valid) + 1


def test_same_named_files_in_two_directories_keep_their_own_quarantine(tmp_path: Path) -> None:
    paths = []
    for folder in ("a", "b"):
        frame = _valid(40)
        frame["transaction_id"] = [f"{folder}-{i}" for i in range(40)]
        frame.loc[frame.index[:3], "amount"] = -1.0
        (tmp_path / folder).mkdir()
        paths.append(_write(tmp_path / folder / "part.parquet", frame))
    valid, report = load_validated(paths, SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=0.1)
    files = sorted((tmp_path / "q").glob("*.parquet"))
    on_disk = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(files) == 2 and report.rows_quarantined == 6 == len(on_disk)
    assert sorted(set(on_disk["_source"])) == sorted(str(p) for p in paths)  # every row names its file
    assert report.rows_in == 80 == len(valid) + len(on_disk)


def test_an_empty_timestamp_is_a_null_in_files_and_on_the_request_path(tmp_path: Path) -> None:
    from inferline.features.contract import compile_contract
    from inferline.features.state import fit_state
    from inferline.features.wire import encode_rows

    frame = _valid(30)
    frame.loc[2, "event_time"] = ""
    path = _write(tmp_path / "upstream.parquet", frame)
    _, report = load_validated([path], SPEC, max_invalid_share=1.0)
    assert report.files[0]["reasons"] == {"event_time:null": 1}
    contract = compile_contract(SPEC, fit_state(fraud.generate(500, seed=2), SPEC))
    _, status = contract.featurize(encode_rows(frame.iloc[[2]].drop(columns=[SPEC.label]), SPEC))
    assert status.tolist() == ["event_time:null"]


def test_a_timestamp_beyond_nanoseconds_is_one_quarantined_row(tmp_path: Path) -> None:
    path, bad_id = _far_future(tmp_path)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q")
    assert report.files[0]["reasons"] == {"event_time:out_of_bounds": 1}
    assert report.rows_in == 200 == len(valid) + 1
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert quarantine["transaction_id"].tolist() == [bad_id]


def test_a_short_or_long_csv_record_is_its_own_rows_defect_never_shifted(tmp_path: Path) -> None:
    frame = _valid(40).drop(columns=[SPEC.label])  # scoring input: the last column is the optional description
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]  # row 3 lost its last field: pandas would pad it, silently
    lines[9] = lines[9] + ",surplus"  # row 8 has a field too many: pandas would refuse the whole file
    path.write_text("\n".join(lines) + "\n")
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q", include_label=False)
    assert report.rows_in == 40 == len(valid) + report.rows_quarantined
    assert report.files[0]["reasons"] == {"_row:too_few_fields": 1, "_row:too_many_fields": 1}
    kept = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert kept["_reasons"].tolist() == ["_row:too_few_fields", "_row:too_many_fields"]
    assert kept["_record"].tolist() == [lines[4], lines[9]]
    assert kept["transaction_id"].isna().all(), "no value of a misfit record lands in any column"
    assert valid["transaction_id"].tolist() == frame["transaction_id"].drop(index=[3, 8]).tolist()
    assert valid["description"].tolist() == frame["description"].drop(index=[3, 8]).tolist()


@pytest.mark.parametrize(
    ("encoding", "says"),
    [("utf-16", "UTF-16 text (little-endian, byte order mark FF FE)"), ("utf-16-be", "UTF-16 text (big-endian")],
)
def test_a_utf16_csv_is_named_utf16_not_cp1252(tmp_path: Path, encoding: str, says: str) -> None:
    path = tmp_path / "upstream.csv"
    _valid(20).to_csv(path, index=False, encoding=encoding)
    with pytest.raises(FileLevelError) as info:
        load_validated([path], SPEC)
    assert says in str(info.value) and "iconv -f UTF-16 -t UTF-8 upstream.csv" in str(info.value)
    assert "cp1252" not in str(info.value)


def test_a_repeated_column_name_is_refused_by_name(tmp_path: Path) -> None:
    frame = _valid(20)
    csv_path = tmp_path / "twice.csv"
    frame.to_csv(csv_path, index=False)
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([lines[0].replace("country", "amount"), *lines[1:]]) + "\n")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    parquet_path = tmp_path / "twice.parquet"
    pq.write_table(
        table.rename_columns([("amount" if n == "country" else n) for n in table.column_names]), parquet_path
    )
    for path in (csv_path, parquet_path):
        with pytest.raises(FileLevelError) as info:
            load_validated([path], SPEC)
        assert "column 'amount': column name repeated (received 2 columns named 'amount'" in str(info.value)
        assert "amount.1" not in str(info.value)


def test_dictionary_typed_string_columns_are_read_as_their_values(tmp_path: Path) -> None:
    frame = fraud.generate(300, seed=5)
    categorical = frame.astype({"currency": "category", "country": "category", "channel": "category"})
    path = _write(tmp_path / "dictionary.parquet", categorical)
    assert pa.types.is_dictionary(pq.read_schema(path).field("currency").type)
    valid, report = load_validated([path], SPEC)
    assert report.rows_quarantined == 0 and report.rows_valid == 300
    assert valid["currency"].tolist() == frame["currency"].tolist()
