"""What tests/unit/test_duplicates.py (the tests that start no process) and tests/system/test_duplicates_system.py
(those that do) both use: helpers and case tables kept in one place."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inferline.features.pipelines import fraud

ID = "transaction_id"
DUP = f"{ID}:duplicate"


def _write(path: Path, frame: pd.DataFrame) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def _two_files(tmp_path: Path, n: int = 200) -> tuple[Path, Path, dict[str, str]]:
    """a.parquet and b.parquet (``n`` rows each, distinct ids) then made to share ids: b's rows 0-2 carry a's ids
    0-2, b's row 3 a's id 3 and breaks a rule too (amount -1), b's rows 4 and 5 both carry a's id 4 (a value
    repeated within a file and across files)."""
    a = fraud.generate(n, seed=21)
    b = fraud.generate(n, seed=22)
    ids = a[ID].tolist()
    b.loc[0:3, ID] = ids[0:4]
    b.loc[3, "amount"] = -1.0
    b.loc[4:5, ID] = ids[4]
    shared = {"plain": ids[0], "bad_too": ids[3], "thrice": ids[4]}
    return _write(tmp_path / "a.parquet", a), _write(tmp_path / "b.parquet", b), shared
