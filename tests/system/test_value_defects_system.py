"""Value-level data defects (issue 30): each class a row's own defect with a reason that names it, kept in the
quarantine as it arrived, the same on every path (files through validation, the request path's scalar and vector
lowerings). No test here starts a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from inferline.features.pipelines import fraud
from tests.value_defects_cases import SPEC

# ------------------------------------------------------------------------------------------ numbers as text
NUMBER_CELLS = {  # a CSV cell in a number column -> the row's reason (amount: float64; customer_age_days: int64)
    ("amount", "2026-01-05"): "amount:not_a_number",  # numpy read it as a type spec: a traceback before
    ("amount", "0x1p-3"): "amount:not_a_number",
    ("amount", "1,234.50"): "amount:not_a_number",
    ("amount", "１２３"): "amount:non_ascii_digits",  # full-width
    ("amount", "١٢٣"): "amount:non_ascii_digits",  # Arabic-Indic
    ("amount", "1e309"): "amount:beyond_float64",  # float() gives inf: not the value sent
    ("customer_age_days", "2026-01-05"): "customer_age_days:not_a_number",
    ("customer_age_days", "٤٢"): "customer_age_days:non_ascii_digits",
    ("customer_age_days", "9223372036854775808"): "customer_age_days:beyond_int64",  # 2**63
    ("customer_age_days", "1e19"): "customer_age_days:beyond_int64",
    ("customer_age_days", "3.5"): "customer_age_days:not_integer",
}


def _csv_with(tmp_path: Path, cells: dict[tuple[str, str], str]) -> tuple[Path, pd.DataFrame, dict[str, str]]:
    """A CSV file of valid rows with each cell of ``cells`` written into its own row; the reasons by id."""
    frame = fraud.generate(40, seed=6).astype({"amount": object, "customer_age_days": object})
    expected: dict[str, str] = {}
    for i, ((column, text), reason) in enumerate(cells.items(), start=5):
        frame.loc[i, column] = text
        expected[str(frame.loc[i, "transaction_id"])] = reason
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    return path, frame, expected


def test_a_number_cell_that_is_no_number_costs_only_its_row_and_says_why(tmp_path: Path) -> None:
    from inferline.features.dataset import load_validated, quarantine_name
    from tests.defects_cases import _cli

    path, frame, expected = _csv_with(tmp_path, NUMBER_CELLS)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert report.rows_in == len(frame) == len(valid) + len(quarantine)
    assert dict(zip(quarantine["transaction_id"], quarantine["_reasons"], strict=True)) == expected
    # the quarantine keeps each cell as it arrived
    arrived = {
        tid: (row["amount"], row["customer_age_days"])
        for tid, row in zip(quarantine["transaction_id"], quarantine.to_dict("records"), strict=True)
    }
    for (column, text), _ in NUMBER_CELLS.items():
        tid = next(t for t, r in expected.items() if frame.set_index("transaction_id").loc[t, column] == text)
        assert arrived[tid][0 if column == "amount" else 1] == text
    # the valid rows keep their numbers exactly
    assert str(valid["customer_age_days"].dtype) == "int64" and str(valid["amount"].dtype) == "float64"
    good = frame[~frame["transaction_id"].isin(expected)].set_index("transaction_id")
    np.testing.assert_array_equal(
        valid.set_index("transaction_id").loc[good.index, "amount"].to_numpy(), good["amount"].astype(float)
    )
    done = _cli("validate", "--pipeline", "fraud", "--max-invalid-share", "1", str(path))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "amount:not_a_number: 3" in done.stdout and "customer_age_days:beyond_int64: 2" in done.stdout
    # each reason beside its count: a value as it arrived, what it is and how to fix it
    assert "amount:non_ascii_digits: 2 (e.g. '１２３'; digits other than ASCII 0-9" in done.stdout
    assert "amount:beyond_float64: 1 (e.g. '1e309'; beyond float64's range" in done.stdout
    assert report.files[0]["examples"]["customer_age_days:not_integer"] == "'3.5'"
