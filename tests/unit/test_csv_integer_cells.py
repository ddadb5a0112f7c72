"""A CSV has no types: an integer column whose only values are fractions (or fractions and nulls) is a column of
numbers, each row its own defect, as the same rows from Parquet are; found by the mixed-defects property test
(tests/system/test_properties.py), which refused the whole file as "numbers arrive as text"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.features.dataset import FileLevelError, load_validated
from inferline.features.pipelines import fraud


def _csv(tmp_path: Path, ages: list[object]) -> Path:
    frame = fraud.generate(len(ages), seed=1)
    frame["customer_age_days"] = pd.Series(ages, dtype=object)
    path = tmp_path / "ages.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("ages", "reasons"),
    [
        ([3.5, np.nan], ["customer_age_days:not_integer", "customer_age_days:null"]),
        ([3.5], ["customer_age_days:not_integer"]),
        ([3.5, np.nan, -3], ["customer_age_days:not_integer", "customer_age_days:null", "customer_age_days:negative"]),
        (["3.5", "abc"], ["customer_age_days:not_integer", "customer_age_days:not_a_number"]),
    ],
)
def test_fractions_in_an_integer_csv_column_are_row_defects(
    tmp_path: Path, ages: list[object], reasons: list[str]
) -> None:
    valid, report = load_validated([_csv(tmp_path, ages)], fraud.SPEC, tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(next((tmp_path / "q").glob("*.parquet")))
    assert len(valid) == 0 and report.files[0]["rows_quarantined"] == len(ages)
    assert list(quarantine["_reasons"]) == reasons


def test_a_column_of_no_numbers_is_still_a_dtype_break(tmp_path: Path) -> None:
    with pytest.raises(FileLevelError, match="numbers arrive as text"):
        load_validated([_csv(tmp_path, ["1,234", "2,345"])], fraud.SPEC, tmp_path / "q", max_invalid_share=1.0)
