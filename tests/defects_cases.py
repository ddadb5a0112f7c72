"""What tests/unit/test_defects.py (the tests that start no process) and tests/system/test_defects_system.py (those that
do) both use: helpers and case tables kept in one place (and the property tests in tests/system/test_properties.py:
DEFECTS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from inferline.features.pipelines import fraud


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


def _write(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False, schema=schema)
    pq.write_table(table, path)
    return path


# ---------------------------------------------------------------------------------------------- issue 16: files
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferline", *args], capture_output=True, text=True, timeout=120)


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
