"""Property tests: rows the spec calls valid are never quarantined; every injected defect is caught with its
reason, on the dataset path (pandera) and the request path alike."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.state import fit_state
from inferline.features.validation import validate_frame
from inferline.serving.client import encode_rows

from .test_defects import DEFECTS
from .test_text_defects import DEFECTS as TEXT_DEFECTS

SPEC = fraud.SPEC
CONTRACT = compile_contract(SPEC, fit_state(fraud.generate(2000, seed=1), SPEC))
# realistic free text: ASCII, accented Latin letters, Cyrillic, CJK (no control characters, no U+FFFD)
TEXT_ALPHABET = string.ascii_letters + string.digits + " .,-#*/'&" + "éèêëüöäßñçåøÉÜÖ" + "ДЕПОЗИТабв" + "東京店"
OFFSETS = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((0, 0), (2, 0), (-5, 0), (5, 30), (-3, -30))]

row = st.fixed_dictionaries(
    {
        "event_time": st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=st.sampled_from(OFFSETS)),
        "amount": st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False),
        "currency": st.from_regex(r"[A-Z]{3}", fullmatch=True),
        "merchant_category": st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        "country": st.from_regex(r"[A-Z]{2}", fullmatch=True),
        "channel": st.sampled_from(fraud.CHANNELS),
        "customer_age_days": st.integers(0, 100_000),
        "description": st.none() | st.text(TEXT_ALPHABET, max_size=60),
        "is_fraud": st.integers(0, 1),
    }
)


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.insert(0, "transaction_id", [f"tx-{i}" for i in range(len(rows))])
    frame["event_time"] = frame["event_time"].map(lambda t: t.isoformat())  # upstream text with its offset
    return frame


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=25))
def test_valid_rows_are_never_quarantined(rows: list[dict]) -> None:
    frame = _frame(rows)
    result = validate_frame(frame, SPEC)
    assert result.rows_quarantined == 0, result.quarantine["_reasons"].tolist()
    assert result.rows_valid == len(rows)
    expected = pd.Series([datetime.fromisoformat(t).astimezone(UTC) for t in frame["event_time"]])
    assert (result.valid["event_time"].dt.tz_convert("UTC") == expected.dt.tz_convert("UTC")).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=2, max_size=10), st.sampled_from(DEFECTS), st.data())
def test_each_injected_defect_is_caught_with_its_reason(rows: list[dict], defect, data) -> None:
    changes, reasons = defect
    frame = _frame(rows)
    target = data.draw(st.integers(0, len(frame) - 1))
    for column, value in changes.items():
        frame.loc[target, column] = value
    result = validate_frame(frame, SPEC)
    assert result.quarantine["_reasons"].tolist() == [";".join(sorted(reasons))]
    assert result.rows_valid == len(frame) - 1
    # the request path (what Triton runs) on the same rows as a client sends them refuses the same row with one of
    # the same reasons (its first); the label is not part of a request
    wire = {k: v.reshape(-1) for k, v in encode_rows(frame, SPEC).items()}
    _, status = CONTRACT.featurize(wire)
    served = [r for r in reasons if not r.startswith(f"{SPEC.label}:")]
    assert [s for i, s in enumerate(status) if i != target] == ["ok"] * (len(frame) - 1)
    assert status[target] in served if served else status[target] == "ok"


# every defect class a file can carry, each with the reasons it must get (a long text is 10,001 characters: the
# default bound of a text column is 10,000)
MIXABLE = [
    *DEFECTS,
    *(
        ({**c, "description": "x" * 10_001} if "x" * 1000 in str(c.get("description", "")) else c, {r})
        for c, r in TEXT_DEFECTS
    ),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.lists(row, min_size=1, max_size=12), st.sampled_from(["parquet", "csv"])), min_size=1, max_size=3
    ),
    st.data(),
)
def test_random_mixtures_of_defects_across_files_reconcile(files: list[tuple[list[dict], str]], data) -> None:
    """Random defects (every class above, several per file, in Parquet and CSV files) injected into valid rows:
    rows in = rows valid + rows quarantined, per file and in all; each row is in exactly one place; every injected
    row is quarantined with exactly its reasons and no valid row is."""
    import tempfile
    from pathlib import Path

    from inferline.features.dataset import load_validated, quarantine_name

    expected: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for j, (rows, fmt) in enumerate(files):
            frame = _frame(rows)
            frame["transaction_id"] = [f"f{j}-{t}" for t in frame["transaction_id"]]
            targets = data.draw(st.lists(st.integers(0, len(frame) - 1), unique=True, max_size=len(frame)))
            for target in targets:
                changes, reasons = data.draw(st.sampled_from(MIXABLE))
                for column, value in changes.items():
                    if column == "transaction_id":  # each damaged id stays distinct: no accidental duplicates
                        value = " " * (len(expected) + 1) if value.isspace() else value + str(frame.loc[target, column])
                    if frame[column].dtype.kind == "i" and not isinstance(value, int):
                        frame[column] = frame[column].astype("float64")  # what a null or a fraction makes of it
                    frame.loc[target, column] = value
                expected[str(frame.loc[target, "transaction_id"])] = set(reasons)
            path = Path(tmp) / f"part-{j}.{fmt}"
            frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
            paths.append(path)
        valid, report = load_validated(paths, SPEC, quarantine_dir=Path(tmp) / "q", max_invalid_share=1.0)
        quarantined: dict[str, set[str]] = {}
        for f, path in zip(report.files, paths, strict=True):
            assert f["rows_in"] == f["rows_valid"] + f["rows_quarantined"]
            q = Path(tmp) / "q" / quarantine_name(path)
            rows_q = pd.read_parquet(q) if q.exists() else pd.DataFrame(columns=["transaction_id", "_reasons"])
            assert len(rows_q) == f["rows_quarantined"]
            for tid, reasons in zip(rows_q["transaction_id"], rows_q["_reasons"], strict=True):
                assert str(tid) not in quarantined, "a row quarantined twice"
                quarantined[str(tid)] = set(str(reasons).split(";"))
    assert report.rows_in == sum(len(r) for r, _ in files) == len(valid) + len(quarantined)
    assert quarantined == expected
    assert set(expected).isdisjoint(set(valid["transaction_id"].astype(str)))


# ------------------------------------------------------------------ issue 30: per-file gates, CSV field counts
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 30)), min_size=1, max_size=4), st.floats(0.0, 0.5))
def test_the_gate_refuses_exactly_the_files_over_the_share(files: list[tuple[int, int]], share: float) -> None:
    """Files of random sizes with random numbers of invalid rows, a random limit: the input is refused exactly when
    some file's own share of invalid rows is above the limit, the refusal names exactly those files, and every
    file's quarantine is kept, refused or not (rows in = rows valid + rows quarantined)."""
    import tempfile
    from pathlib import Path

    import pytest

    from inferline.features.dataset import InvalidShareExceeded, load_validated, quarantine_name

    with tempfile.TemporaryDirectory() as tmp:
        paths, over = [], []
        for j, (size, bad) in enumerate(files):
            bad = min(bad, size)
            frame = fraud.generate(size, seed=j)
            frame["transaction_id"] = [f"f{j}-{i}" for i in range(size)]
            frame.loc[frame.index[:bad], "amount"] = -1.0
            path = Path(tmp) / f"part-{j}.parquet"
            frame.to_parquet(path, index=False)
            paths.append(path)
            if bad / size > share:
                over.append(str(path))
        if over:
            with pytest.raises(InvalidShareExceeded) as info:
                load_validated(paths, SPEC, quarantine_dir=Path(tmp) / "q", max_invalid_share=share)
            assert [f["file"] for f in info.value.files] == over
        else:
            load_validated(paths, SPEC, quarantine_dir=Path(tmp) / "q", max_invalid_share=share)
        for path, (size, bad) in zip(paths, files, strict=True):
            kept = Path(tmp) / "q" / quarantine_name(path)
            assert (len(pd.read_parquet(kept)) if kept.exists() else 0) == min(bad, size)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=12), st.data())
def test_csv_records_with_the_wrong_field_count_are_quarantined_never_shifted(rows: list[dict], data) -> None:
    """Scoring CSV input (no label) whose random records lost or gained trailing fields: each such record is
    quarantined with ``_row:too_few_fields`` or ``_row:too_many_fields`` and its text, no value of it lands in a
    column, and every other row is valid with its own values."""
    import csv
    import io
    import tempfile
    from pathlib import Path

    from inferline.features.dataset import load_validated, quarantine_name

    frame = _frame(rows).drop(columns=[SPEC.label])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upstream.csv"
        frame.to_csv(path, index=False)
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.reader(fh))
        width = len(records[0])
        changed = data.draw(st.dictionaries(st.integers(0, len(frame) - 1), st.integers(-(width - 1), 3).filter(bool)))
        expected = {}
        for i, delta in changed.items():
            fields = records[i + 1]
            records[i + 1] = fields[:delta] if delta < 0 else fields + ["x"] * delta
            line = io.StringIO()
            csv.writer(line, lineterminator="").writerow(records[i + 1])
            expected[i] = ("_row:too_few_fields" if delta < 0 else "_row:too_many_fields", line.getvalue())
        with open(path, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(records)
        valid, report = load_validated(
            [path], SPEC, quarantine_dir=Path(tmp) / "q", include_label=False, max_invalid_share=1.0
        )
        kept_path = Path(tmp) / "q" / quarantine_name(path)
        kept = pd.read_parquet(kept_path) if kept_path.exists() else pd.DataFrame(columns=["_reasons", "_record"])
    assert report.rows_in == len(frame) == len(valid) + len(kept)
    assert list(zip(kept["_reasons"], kept["_record"], strict=True)) == [expected[i] for i in sorted(expected)]
    untouched = frame.drop(index=list(changed))
    assert valid["transaction_id"].tolist() == untouched["transaction_id"].tolist()
    assert valid["merchant_category"].tolist() == untouched["merchant_category"].tolist()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(row, min_size=1, max_size=8),
    st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]),
)
def test_a_wide_encoding_is_named_as_such(rows: list[dict], encoding: str) -> None:
    """A CSV file in UTF-16 or UTF-32, with or without a byte order mark, whatever text it holds: one file-level
    error naming that encoding and the conversion, never cp1252 advice or columns of NUL-laden names."""
    import tempfile
    from pathlib import Path

    import pytest

    from inferline.features.dataset import load_validated
    from inferline.features.validation import FileLevelError

    codec = encoding[:6].upper()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upstream.csv"
        _frame(rows).to_csv(path, index=False, encoding=encoding)
        with pytest.raises(FileLevelError) as info:
            load_validated([path], SPEC)
    assert f"received {codec} text" in str(info.value) and f"iconv -f {codec} -t UTF-8" in str(info.value)
    assert "cp1252" not in str(info.value)
