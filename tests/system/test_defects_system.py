"""A corpus of injected defects, mixed into valid data: every one caught with its reason, no valid row lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inferline.features.dataset import quarantine_name
from inferline.features.pipelines import fraud
from tests.defects_cases import _cli, _far_future, _valid, _write

from .conftest import score_batch


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
