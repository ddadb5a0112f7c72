"""A corpus of injected defects, mixed into valid data: every one caught with its reason, no valid row lost."""

from __future__ import annotations

import json
import subprocess
import sys
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

from .conftest import score_batch

SPEC = fraud.SPEC


def _valid(n: int = 3000) -> pd.DataFrame:
    frame = fraud.generate(n, seed=11)
    # upstream sends ISO-8601 text with mixed offsets: valid, converted to UTC, and recorded
    offsets = ["+00:00", "+02:00", "-05:00", "Z"]
    frame["event_time"] = [
        (t.tz_convert(f"Etc/GMT{'-' if o.startswith('+') else '+'}{int(o[1:3])}") if o not in ("Z", "+00:00") else t)
        .isoformat()
        .replace("+00:00", "Z" if o == "Z" else "+00:00")
        for t, o in zip(frame["event_time"], np.resize(offsets, n), strict=True)
    ]
    return frame


# row -> (column changes, expected reasons)
DEFECTS: list[tuple[dict[str, object], set[str]]] = [
    ({"country": None}, {"country:null"}),
    ({"currency": None, "amount": -1.0}, {"currency:null", "amount:negative"}),  # both reasons reported
    ({"description": "Caf\u00c3\u00a9 de Flore"}, {"description:mojibake"}),
    ({"description": "Caf\ufffd"}, {"description:replacement_char"}),
    ({"description": "tab\x0bbed"}, {"description:control_chars"}),
    ({"event_time": "2026-02-01T10:00:00"}, {"event_time:naive_timestamp"}),
    ({"event_time": "1767225600"}, {"event_time:epoch_number"}),
    ({"event_time": "1999-12-31T23:00:00Z"}, {"event_time:out_of_range"}),
    ({"event_time": "next tuesday"}, {"event_time:unparseable"}),
    ({"amount": float("nan")}, {"amount:null"}),
    ({"amount": float("inf")}, {"amount:not_finite"}),
    ({"customer_age_days": -3}, {"customer_age_days:negative"}),
    ({"channel": "fax"}, {"channel:unknown_value"}),
    ({"country": "usa"}, {"country:not_iso3166"}),
    ({"currency": "usd"}, {"currency:not_iso4217"}),
    ({"merchant_category": "Grocery Store"}, {"merchant_category:bad_format"}),
    ({"is_fraud": 2}, {"is_fraud:not_binary"}),
    ({"transaction_id": "   "}, {"transaction_id:empty"}),
]


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


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False, schema=schema)
    pq.write_table(table, path)
    return path


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


# ---------------------------------------------------------------------------------------------- issue 16: files
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferline", *args], capture_output=True, text=True, timeout=120)


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


def test_ids_repeated_across_files_are_quarantined_not_fatal(tmp_path: Path) -> None:
    frame = _valid(300)
    first = _write(tmp_path / "first.parquet", frame.iloc[:200])
    second = _write(tmp_path / "second.parquet", frame.iloc[195:])  # 5 ids again
    done = _cli(
        "validate", "--pipeline", "fraud", str(first), str(second), "--quarantine", str(tmp_path / "q"), "--json"
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["rows_in"] == 305 == report["rows_valid"] + report["rows_quarantined"]
    # the fraud id column's policy is "all": every copy, the first one in first.parquet too
    assert report["rows_quarantined"] == 10
    assert [f["reasons"] for f in report["files"]] == [{"transaction_id:duplicate": 5}] * 2
    for path in (first, second):
        repeats = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
        assert sorted(repeats["transaction_id"]) == sorted(frame["transaction_id"].iloc[195:200])
        assert set(repeats["_reasons"]) == {"transaction_id:duplicate"}


def test_unreadable_files_are_all_reported_in_one_pass_without_a_traceback(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.parquet", _valid(20))
    empty_parquet = tmp_path / "empty.parquet"
    empty_parquet.write_bytes(b"")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_bytes(b"")
    broken = [empty_parquet, truncated, empty_csv]
    done = _cli("validate", "--pipeline", "fraud", str(good), *map(str, broken), "--quarantine", str(tmp_path / "q"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "3 of 4 input files cannot be used" in done.stderr
    for path in broken:
        assert str(path) in done.stderr
    assert "not readable as Parquet" in done.stderr and "not readable as CSV" in done.stderr
    assert not (tmp_path / "q").exists(), "nothing is quarantined from an input that is refused"


def test_a_directory_says_what_it_did_not_read(tmp_path: Path) -> None:
    _write(tmp_path / "part.parquet", _valid(20))
    _valid(20).to_csv(tmp_path / "extra.csv", index=False)
    (tmp_path / "nested").mkdir()
    done = _cli("validate", "--pipeline", "fraud", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "skipped 2 other entries ['extra.csv', 'nested/']" in done.stderr


def test_numbers_with_thousands_separators_are_a_dtype_break_that_says_how_to_fix(tmp_path: Path) -> None:
    """A number column that is text (a Parquet string column) breaks the file, naming the culprit; in a CSV file
    (no types) one such cell is its row's defect, kept as it arrived (issue 30)."""
    frame = _valid(30)
    frame["amount"] = frame["amount"].astype(str)
    frame.loc[3, "amount"] = "1,234.50"
    path = _write(tmp_path / "upstream.parquet", frame)
    done = _cli("validate", "--pipeline", "fraud", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr and "TypeError" not in done.stderr
    assert (
        "column 'amount': numbers arrive as text (received 30 value(s) as text; 1 of them not a number, such as "
        "'1,234.50' (str), expected float64 numbers" in done.stderr
    )
    assert "without thousands separators" in done.stderr
    frame = _valid(30)
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[3, "amount"] = "1,234.50"
    frame.to_csv(tmp_path / "upstream.csv", index=False)
    done = _cli("validate", "--pipeline", "fraud", "--quarantine", str(tmp_path / "q"), str(tmp_path / "upstream.csv"))
    assert done.returncode == 0, done.stderr  # 1 of 30 rows (3 %): below the default 5 % threshold
    assert "amount:not_a_number: 1" in done.stdout
    (quarantined,) = (tmp_path / "q").iterdir()
    assert pd.read_parquet(quarantined)["amount"].tolist() == ["1,234.50"]


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


def _far_future(tmp_path: Path) -> tuple[Path, str]:
    """A timestamp[us, UTC] file (as Spark or pyarrow write them) with one year-3000 value: beyond nanoseconds."""
    import datetime as dt

    frame = _valid(200)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True, format="ISO8601")
    values = [t.to_pydatetime() for t in frame["event_time"]]
    values[7] = dt.datetime(3000, 1, 1, tzinfo=dt.UTC)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    where = table.schema.get_field_index("event_time")
    table = table.set_column(where, "event_time", pa.array(values, type=pa.timestamp("us", tz="UTC")))
    path = tmp_path / "far.parquet"
    pq.write_table(table, path)
    return path, str(frame["transaction_id"].iloc[7])


def test_a_timestamp_beyond_nanoseconds_is_one_quarantined_row(tmp_path: Path) -> None:
    path, bad_id = _far_future(tmp_path)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q")
    assert report.files[0]["reasons"] == {"event_time:out_of_bounds": 1}
    assert report.rows_in == 200 == len(valid) + 1
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert quarantine["transaction_id"].tolist() == [bad_id]


def test_a_timestamp_beyond_nanoseconds_never_fails_a_batch_partition(published, dask_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, bad_id = _far_future(tmp_path)
    report = score_batch(published, dask_cluster, [path], tmp_path / "out")
    assert report.rows_in == 200 == report.rows_predicted + report.rows_quarantined and report.rows_quarantined == 1
    quarantine = pd.read_parquet(tmp_path / "out" / "_quarantine")
    assert quarantine["transaction_id"].tolist() == [bad_id]
    assert quarantine["_reasons"].tolist() == ["event_time:out_of_bounds"]


# ------------------------------------------------------------------------ issue 30: per-file gates, file defects
def test_the_invalid_share_gate_is_per_file_and_a_refusal_keeps_its_quarantine(tmp_path: Path) -> None:
    naive = fraud.generate(100, seed=21)
    naive["event_time"] = naive["event_time"].dt.tz_localize(None)  # every row refused: naive_timestamp
    bad = _write(tmp_path / "naive.parquet", naive)
    good = _write(tmp_path / "good.parquet", fraud.generate(3000, seed=22))  # 100 of 3,100 rows is 3.2 % overall
    done = _cli("validate", "--pipeline", "fraud", str(bad), str(good), "--quarantine", str(tmp_path / "q"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{bad}: 100 of 100 rows (100.0%" in done.stderr and str(good) + ":" not in done.stderr
    assert f"kept in {tmp_path / 'q'}" in done.stderr
    kept = pd.read_parquet(tmp_path / "q" / quarantine_name(bad))
    assert len(kept) == 100 and set(kept["_reasons"]) == {"event_time:naive_timestamp"}


def _corrupt_page(path: Path) -> Path:
    """A Parquet file with bytes overwritten inside one column's data page (found aborting pyarrow's threaded
    reader now and then, after it raised)."""
    pq.write_table(pa.Table.from_pandas(fraud.generate(3000, seed=1), preserve_index=False), path, compression="none")
    data = bytearray(path.read_bytes())
    meta = pq.ParquetFile(path).metadata
    rng = np.random.default_rng(9)
    chunk = meta.row_group(0).column(int(rng.integers(0, meta.num_columns)))
    for _ in range(4):
        data[chunk.data_page_offset + 40 + int(rng.integers(0, chunk.total_compressed_size - 50))] = int(
            rng.integers(0, 256)
        )
    path.write_bytes(bytes(data))
    return path


def test_a_corrupt_parquet_page_is_refused_and_never_aborts_the_process(tmp_path: Path) -> None:
    path = _corrupt_page(tmp_path / "corrupt.parquet")
    code = (
        "import sys\nfrom inferline.features.dataset import read_raw\nfrom inferline.features.validation import "
        "FileLevelError\ntry:\n    read_raw(sys.argv[1])\nexcept FileLevelError as exc:\n    print(exc)\n"
        "    sys.exit(3)\n"
    )
    codes = []
    for _ in range(6):  # before the fix 2 to 5 of 8 runs died of SIGABRT after the error was raised
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        codes.append(done.returncode)
        assert "not readable as Parquet" in done.stdout and "corrupt.parquet" in done.stdout, done.stderr
    assert codes == [3] * 6, f"exit statuses {codes}: a corrupt page must be a refusal, never an abort (-6)"


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
