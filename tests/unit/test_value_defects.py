"""Value-level data defects (issue 30): each class a row's own defect with a reason that names it, kept in the
quarantine as it arrived, the same on every path (files through validation, the request path's scalar and vector
lowerings). No test here starts a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.state import fit_state
from inferline.features.validation import validate_frame
from inferline.features.wire import encode_rows, parse_instant
from tests.value_defects_cases import SPEC

CONTRACT = compile_contract(SPEC, fit_state(fraud.generate(2000, seed=1), SPEC))

# ------------------------------------------------------------------------------------------ timestamp grammar
ACCEPTED = {  # RFC 3339 (lower-case t and z, a space for T) -> the instant
    "2026-01-05T10:00:00+00:00": "2026-01-05T10:00:00",
    "2026-01-05 10:00:00+00:00": "2026-01-05T10:00:00",
    "2026-01-05t10:00:00z": "2026-01-05T10:00:00",
    "2026-01-05T10:00:00z": "2026-01-05T10:00:00",
    "2026-01-05t10:00:00Z": "2026-01-05T10:00:00",
    "2026-01-05T11:30:00+01:30": "2026-01-05T10:00:00",
    "2026-01-05T10:00:00.123456789Z": "2026-01-05T10:00:00.123456789",  # nanoseconds, not truncated
    "2026-01-05T10:00:00.5-00:00": "2026-01-05T10:00:00.5",
}
REFUSED = [  # ISO 8601 forms outside RFC 3339, and what only datetime.fromisoformat reads
    "20260105T100000Z",  # basic format
    "2026-01-05T10:00+0000",  # no seconds, offset without a colon
    "2026-01-05T10:00:00+0000",
    "2026-01-05T10:00:00+00",
    "2026-01-05T10Z",
    "2026-01-05X10:00:00+00:00",  # any separator
    "2026-01-05_10:00:00Z",
    "2026-W01-1T10:00:00Z",  # week date
    "2026-01-05T10:00:00,5Z",  # comma fraction
    "2026-01-05T10:00:00 +00:00",
    "2026-01-05T10:00:00.Z",
    "2026-01-05T10:00:00.1234567890Z",  # finer than nanoseconds
    "2026/01/05 10:00:00Z",
    "Jan 5 2026 10:00:00Z",
    "２０２６-01-05T10:00:00Z",  # full-width digits
    "2026-02-30T10:00:00Z",
    "  ",  # white space alone is no null (an empty string is): unparseable on the wire, and so in files
]


@pytest.mark.parametrize(("text", "instant"), sorted(ACCEPTED.items()))
def test_rfc3339_text_is_read_exactly(text: str, instant: str) -> None:
    assert parse_instant(text, assume_utc=False) == (int(np.datetime64(instant, "ns").view("int64")), None)


@pytest.mark.parametrize("text", REFUSED)
def test_text_outside_rfc3339_is_unparseable(text: str) -> None:
    assert parse_instant(text, assume_utc=False) == (None, "unparseable")
    assert parse_instant(text, assume_utc=True) == (None, "unparseable")


def _statuses(frame: pd.DataFrame) -> list[str]:
    """The request path's statuses for ``frame``: the scalar lowering (up to 8 rows) and the vector lowering
    (more) must agree, so both run and are compared."""
    wire = {k: v.reshape(-1) for k, v in encode_rows(frame.drop(columns=[SPEC.label]), SPEC).items()}
    names = [c.name for c in SPEC.input_columns]
    arrays = [wire[name] for name in names]
    _, by_row = CONTRACT._featurize_rows(arrays, len(frame))
    _, by_column = CONTRACT._featurize_vector(arrays, len(frame))
    assert by_row.tolist() == by_column.tolist()
    return [str(s) for s in by_row]


def test_every_path_reads_timestamps_by_one_grammar() -> None:
    """Validation of a file's text (the pandera/numpy path), the request path row by row and column by column:
    the same rows refused, with the same reason, and the same instants for the rest."""
    texts = [*ACCEPTED, *REFUSED]
    frame = fraud.generate(len(texts), seed=3)
    frame["event_time"] = texts
    result = validate_frame(frame, SPEC)
    quarantined = dict(zip(result.quarantine["transaction_id"], result.quarantine["_reasons"], strict=True))
    assert set(quarantined.values()) == {"event_time:unparseable"}
    assert len(quarantined) == len(REFUSED)
    statuses = _statuses(frame)
    served = {tid: s for tid, s in zip(frame["transaction_id"], statuses, strict=True) if s != "ok"}
    assert served == quarantined
    got = result.valid["event_time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    assert got.tolist() == np.array(list(ACCEPTED.values()), dtype="datetime64[ns]").tolist()


def test_numbers_as_text_name_each_culprit_and_its_fix(tmp_path: Path) -> None:
    """A number column stored as text (here a Parquet string column) is a file-level break whose message names
    the values that are no number in plain notation, by kind, with what to write instead."""
    from inferline.features.validation import FileLevelError

    frame = fraud.generate(12, seed=6)
    frame["amount"] = frame["amount"].astype(str)
    frame.loc[[0, 1, 2, 3, 4], "amount"] = ["１２３", "١٢٣", "1e309", "2026-01-05", "0x1p-3"]
    with pytest.raises(FileLevelError) as info:
        validate_frame(frame, SPEC)
    message = str(info.value)
    assert "numbers arrive as text (received 12 value(s) as text; 2 of them not a number, such as '2026-01-05'" in (
        message
    )
    assert "2 of them in digits other than ASCII 0-9, such as '１２３' (str), '١٢٣' (str)" in message
    assert "1 of them beyond float64's range (|x| < 1.8e308), such as '1e309'" in message
    assert "in ASCII digits (123, not '１２３'" in message and "within float64's range" in message
    one = fraud.generate(1, seed=6).assign(amount="2026-01-05")  # one value, which numpy reads as a type spec
    with pytest.raises(FileLevelError, match="1 of them not a number, such as '2026-01-05'"):
        validate_frame(one, SPEC)


def test_an_integer_beyond_int64_is_named_so_on_every_path() -> None:
    frame = fraud.generate(6, seed=6)
    frame["customer_age_days"] = frame["customer_age_days"].astype("uint64")
    frame.loc[1, "customer_age_days"] = 2**63
    frame.loc[2, "customer_age_days"] = 2**64 - 1
    result = validate_frame(frame, SPEC)
    assert result.reason_counts == {"customer_age_days:beyond_int64": 2}
    assert result.quarantine["customer_age_days"].tolist() == [2**63, 2**64 - 1]  # as they arrived
    refused: dict[int, str] = {}
    encode_rows(frame.drop(columns=[SPEC.label]).astype({"customer_age_days": object}), SPEC, refused)
    assert refused == {1: "customer_age_days:beyond_int64", 2: "customer_age_days:beyond_int64"}
    floats = frame.astype({"customer_age_days": "float64"})
    floats.loc[3, "customer_age_days"] = 1e19
    floats.loc[4, "customer_age_days"] = 2.5
    result = validate_frame(floats, SPEC)
    assert result.reason_counts == {"customer_age_days:beyond_int64": 3, "customer_age_days:not_integer": 1}
    # nullable integers compare exactly, never through float64: int64's largest value is one, 2**63 is not
    nullable = frame.astype({"customer_age_days": "UInt64"})
    nullable.loc[0, "customer_age_days"] = 2**63 - 1
    nullable.loc[3, "customer_age_days"] = None
    result = validate_frame(nullable, SPEC)
    assert result.reason_counts == {"customer_age_days:beyond_int64": 2, "customer_age_days:null": 1}
    assert 2**63 - 1 in result.valid["customer_age_days"].tolist()
    assert result.quarantine["customer_age_days"].tolist() == [2**63, 2**64 - 1, pd.NA]  # exact, as they arrived


# ------------------------------------------------------------------------------------------ what arrived, kept
def test_the_quarantine_keeps_timestamps_and_undecodable_text_as_they_arrived(tmp_path: Path) -> None:
    """A timestamp that failed to parse is kept as its text (not NaT); text that is not UTF-8 is kept
    backslash-escaped (each byte that is not UTF-8 as \\xHH, each backslash doubled; not null), losslessly."""
    import codecs

    from inferline.features.dataset import load_validated, quarantine_name

    frame = fraud.generate(20, seed=7)
    frame["event_time"] = frame["event_time"].map(lambda t: t.isoformat())
    frame.loc[2, "event_time"] = "2026/01/05 10:00"
    frame.loc[3, "event_time"] = "2026-01-05T10:00:00"  # naive
    text = frame.to_csv(index=False).encode()
    text = text.replace(str(frame.loc[4, "transaction_id"]).encode(), b"tx-M\xfcller\\x41", 1)
    path = tmp_path / "upstream.csv"
    path.write_bytes(text)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert quarantine["_reasons"].tolist() == [
        "event_time:unparseable",
        "event_time:naive_timestamp",
        "transaction_id:invalid_utf8",
    ]
    assert quarantine["event_time"].tolist()[:2] == ["2026/01/05 10:00", "2026-01-05T10:00:00"]
    escaped = quarantine["transaction_id"].tolist()[2]
    assert escaped == "tx-M\\xfcller\\\\x41"
    assert codecs.escape_decode(escaped.encode())[0] == b"tx-M\xfcller\\x41"  # lossless
    assert report.rows_in == 20 == len(valid) + len(quarantine)


def test_a_duplicate_moved_to_the_quarantine_is_kept_as_it_arrived_beside_the_others(tmp_path: Path) -> None:
    """Copies of an id found by the pass over all files join a quarantine whose columns hold what arrived:
    one Parquet file, one type per column."""
    from inferline.features.dataset import load_validated, quarantine_name

    frame = fraud.generate(10, seed=8)
    frame["event_time"] = frame["event_time"].map(lambda t: t.isoformat())
    frame.loc[1, "event_time"] = "not a time"
    frame.to_csv(tmp_path / "a.csv", index=False)
    other = fraud.generate(3, seed=9)
    other.loc[0, "transaction_id"] = frame.loc[5, "transaction_id"]
    other.to_csv(tmp_path / "b.csv", index=False)
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    _, report = load_validated(paths, SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(paths[0]))
    assert quarantine["_reasons"].tolist() == ["event_time:unparseable", "transaction_id:duplicate"]
    assert quarantine["event_time"].tolist() == ["not a time", frame.loc[5, "event_time"]]
    assert report.rows_in == 13 == report.rows_valid + report.rows_quarantined


# ------------------------------------------------------------------------------------------ look-alike ids
LOOKALIKES = {  # an id -> a look-alike of it and the rule that refuses the look-alike
    "tx-lookalike-1": ("tx-lookalike-1 ", "transaction_id:whitespace"),  # trailing space
    "tx lookalike 2": ("tx\u00a0lookalike 2", "transaction_id:compatibility_chars"),  # NBSP
    "tx lookalike 3": ("tx\u2009lookalike\u202f3", "transaction_id:compatibility_chars"),  # thin spaces
    "tx-lookalike-4": ("tx-lookalike-４", "transaction_id:compatibility_chars"),  # a full-width digit
    "tx-lookalike-5": ("  tx-lookalike-5", "transaction_id:whitespace"),
}


def _with_lookalikes(n: int = 30, seed: int = 4) -> tuple[pd.DataFrame, dict[str, str]]:
    frame = fraud.generate(n, seed=seed)
    expected: dict[str, str] = {}
    for i, (plain, (lookalike, reason)) in enumerate(LOOKALIKES.items()):
        frame.loc[2 * i, "transaction_id"] = plain
        frame.loc[2 * i + 1, "transaction_id"] = lookalike
        expected[plain] = "transaction_id:duplicate"
        expected[lookalike] = ";".join(sorted([reason, "transaction_id:duplicate"]))
    return frame, expected


def test_ids_that_look_alike_are_one_id_and_the_look_alike_is_refused(tmp_path: Path) -> None:
    from inferline.features.dataset import load_validated, quarantine_name

    frame, expected = _with_lookalikes()
    path = tmp_path / "upstream.csv"
    frame.to_csv(path, index=False)
    valid, report = load_validated([path], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert dict(zip(quarantine["transaction_id"], quarantine["_reasons"], strict=True)) == expected
    assert report.rows_in == len(frame) == len(valid) + len(quarantine)
    # the request path: the look-alike refused by its rule (a row's status is its first reason), its plain twin
    # in the same request a copy
    statuses = dict(zip(frame["transaction_id"], _statuses(frame.iloc[:10]), strict=False))
    for plain, (lookalike, reason) in LOOKALIKES.items():
        assert statuses[plain] == "transaction_id:duplicate" and statuses[lookalike] == reason
    # pandera's schema, built from the same spec, agrees on which rows are copies
    from pandera.errors import SchemaErrors

    with pytest.raises(SchemaErrors) as info:
        CONTRACT.schema().validate(frame, lazy=True)
    cases = info.value.failure_cases
    assert sorted(cases.loc[cases["check"] == "field_uniqueness", "index"].tolist()) == list(range(10))


def test_look_alike_copies_are_found_across_files_in_either_order(tmp_path: Path) -> None:
    from inferline.features.dataset import load_validated

    a, b = fraud.generate(10, seed=11), fraud.generate(10, seed=12)
    a.loc[0, "transaction_id"] = "tx-across-7"
    b.loc[0, "transaction_id"] = "tx-across-７"
    a.loc[1, "transaction_id"] = "tx\u00a0across 8"
    b.loc[1, "transaction_id"] = "tx across 8"
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    _, report = load_validated([tmp_path / "a.csv", tmp_path / "b.parquet"], SPEC, max_invalid_share=1.0)
    assert [f["reasons"] for f in report.files] == [
        {"transaction_id:duplicate": 2, "transaction_id:compatibility_chars": 1},
        {"transaction_id:duplicate": 2, "transaction_id:compatibility_chars": 1},
    ]


def test_a_column_declared_to_compare_text_as_it_is_keeps_look_alikes_apart() -> None:
    from dataclasses import replace

    columns = tuple(replace(c, normalization="none") if c.name == "transaction_id" else c for c in SPEC.columns)
    spec = replace(SPEC, columns=columns)
    frame, _ = _with_lookalikes()
    result = validate_frame(frame, spec)
    assert "transaction_id:duplicate" not in result.reason_counts  # still refused by the rules, not as copies
    assert result.reason_counts["transaction_id:compatibility_chars"] == 3


def test_csv_numbers_are_the_numbers_their_text_names(tmp_path: Path) -> None:
    """A null in a CSV integer column made pandas read it as float64, turning 9007199254740993 (2**53 + 1) into
    ...992 silently; and pandas' default float parser read '3.9255401550942994e-78' an ulp off. Both are read
    exactly now, whether or not another cell of the column is null or no number."""
    from inferline.features.dataset import load_validated

    frame = fraud.generate(6, seed=2).astype({"customer_age_days": object, "amount": object})
    frame.loc[1, "customer_age_days"] = None
    frame.loc[2, "customer_age_days"] = 2**53 + 1
    frame.loc[3, "amount"] = "3.9255401550942994e-78"
    frame.to_csv(tmp_path / "nulls.csv", index=False)
    frame.loc[4, "amount"] = "abc"  # the column is text to pandas now: read cell by cell
    frame.to_csv(tmp_path / "text.csv", index=False)
    for name in ("nulls.csv", "text.csv"):
        valid, report = load_validated([tmp_path / name], SPEC, max_invalid_share=1.0)
        by_id = valid.set_index("transaction_id")
        assert by_id.loc[frame.loc[2, "transaction_id"], "customer_age_days"] == 2**53 + 1, name
        assert by_id.loc[frame.loc[3, "transaction_id"], "amount"] == float("3.9255401550942994e-78"), name
        assert report.files[0]["reasons"]["customer_age_days:null"] == 1


@pytest.mark.parametrize("text", ["1e309", "-1e309", "+1e400"])
def test_a_csv_number_beyond_float64_is_named_so_even_when_the_rest_of_its_column_reads_as_numbers(
    tmp_path: Path, text: str
) -> None:
    # the only odd cell of its column: pandas reads '-1e309' as -inf (was negative;not_finite, the text lost)
    from inferline.features.dataset import load_validated, quarantine_name

    frame = fraud.generate(6, seed=1)
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[2, "amount"] = text
    path = tmp_path / "x.csv"
    frame.to_csv(path, index=False)
    valid, report = load_validated([path], fraud.SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=1.0)
    quarantine = pd.read_parquet(tmp_path / "q" / quarantine_name(path))
    assert report.rows_in == 6 == len(valid) + len(quarantine) and len(quarantine) == 1
    assert quarantine["amount"].tolist() == [text] and quarantine["_reasons"].tolist() == ["amount:beyond_float64"]
