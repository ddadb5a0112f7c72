"""Property tests: rows the spec calls valid are never quarantined; every injected defect is caught with its
reason, on the dataset path (pandera) and the request path alike."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.features.contract import compile_contract
from inferline.features.normalize import normalize_frame
from inferline.features.pipelines import fraud
from inferline.features.state import fit_state
from inferline.features.validation import validate_frame
from inferline.serving.client import encode_rows
from tests.defects_cases import DEFECTS
from tests.text_defects_cases import DEFECTS as TEXT_DEFECTS

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


# ------------------------------------------------------------------------------------------ value-level classes
# (issue 30) generators for numbers as text, look-alike ids, RFC 3339 text and bytes that are not UTF-8
NA_TOKENS = {"na", "nan", "null", "none", "n/a", "inf", "infinity"}  # read as nulls (or inf) by the CSV reader
DIGITS = {"fullwidth": 0xFF10, "arabic_indic": 0x0660, "devanagari": 0x0966, "extended_arabic": 0x06F0}


def _in_digits(n: int, zero: int) -> str:
    return "".join(chr(zero + int(d)) if d.isdigit() else d for d in str(n))


bad_float_text = st.one_of(
    st.dates().map(str).map(lambda t: (t, "not_a_number")),  # '2026-01-05': numpy reads it as a type spec
    st.floats(allow_nan=False, allow_infinity=False).map(float.hex).map(lambda t: (t, "not_a_number")),
    st.integers(1000, 10**9).map(lambda n: (f"{n:,}.50", "not_a_number")),
    st.from_regex(r"[a-z]{1,8}", fullmatch=True)
    .filter(lambda t: t not in NA_TOKENS)
    .map(lambda t: (t, "not_a_number")),
    st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(DIGITS.values()))).map(
        lambda p: (_in_digits(*p), "non_ascii_digits")
    ),
    st.tuples(st.sampled_from(["", "-", "9.9"]), st.integers(309, 9999)).map(
        lambda p: (f"{p[0] or ''}{'1' if p[0] in ('', '-') else ''}e{p[1]}", "beyond_float64")
    ),
)
bad_integer_text = st.one_of(
    st.integers(2**63, 2**80).map(lambda n: (str(n), "beyond_int64")),
    st.integers(-(2**80), -(2**63) - 1).map(lambda n: (str(n), "beyond_int64")),
    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer()).map(lambda x: (repr(x), "not_integer")),
    st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(DIGITS.values()))).map(
        lambda p: (_in_digits(*p), "non_ascii_digits")
    ),
    st.dates().map(str).map(lambda t: (t, "not_a_number")),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=2, max_size=15), st.data())
def test_number_cells_that_are_no_number_cost_only_their_rows(rows: list[dict], data) -> None:
    """Cells of a CSV file's number columns that are no number in plain notation (dates, hex floats, thousands
    separators, words, other digits, values beyond float64 or int64, fractions in an integer column): each its
    row's defect with its reason, kept as it arrived; every other row valid; rows in = valid + quarantined."""
    import tempfile
    from pathlib import Path

    from inferline.features.dataset import load_validated, quarantine_name

    frame = _frame(rows).astype({"amount": object, "customer_age_days": object})
    targets = data.draw(st.lists(st.integers(0, len(frame) - 1), unique=True, min_size=1, max_size=len(frame) - 1))
    expected: dict[str, tuple[str, str, str]] = {}
    for target in targets:
        column = data.draw(st.sampled_from(["amount", "customer_age_days"]))
        text, code = data.draw(bad_float_text if column == "amount" else bad_integer_text)
        frame.loc[target, column] = text
        expected[str(frame.loc[target, "transaction_id"])] = (column, text, f"{column}:{code}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upstream.csv"
        frame.to_csv(path, index=False)
        valid, report = load_validated([path], SPEC, quarantine_dir=Path(tmp) / "q", max_invalid_share=1.0)
        quarantine = pd.read_parquet(Path(tmp) / "q" / quarantine_name(path))
    assert report.rows_in == len(frame) == len(valid) + len(quarantine)
    got = {str(r["transaction_id"]): r for r in quarantine.to_dict("records")}
    assert set(got) == set(expected)
    for tid, (column, text, reason) in expected.items():
        # as it arrived: its text (a column pandas read as uint64 keeps that number, written the same)
        assert got[tid]["_reasons"] == reason and str(got[tid][column]) == text


SPACES = ["\u00a0", "\u2009", "\u202f", "\u3000"]  # no-break, thin, narrow no-break, ideographic: NFKC -> " "


@st.composite
def lookalike_pair(draw: st.DrawFn, i: int) -> tuple[str, str, set[str]]:
    """A plain id (words of ASCII letters and digits, single spaces) and a look-alike of it that NFKC and white
    space trimming fold back into it, with the reasons the look-alike must get besides ``duplicate``."""
    words = draw(st.lists(st.from_regex(r"[a-z]{1,4}[0-9]{1,4}", fullmatch=True), min_size=2, max_size=4))
    plain = f"id{i} " + " ".join(words)
    changes = draw(st.sets(st.sampled_from(["pad", "space", "digit", "letter"]), min_size=1))
    lookalike, reasons = plain, set()
    if "space" in changes:
        at = draw(st.sampled_from([j for j, c in enumerate(lookalike) if c == " "]))
        lookalike = lookalike[:at] + draw(st.sampled_from(SPACES)) + lookalike[at + 1 :]
        reasons.add("transaction_id:compatibility_chars")
    for kind, test, offset in (("digit", str.isdigit, 0xFF10 - ord("0")), ("letter", str.isalpha, 0xFF41 - ord("a"))):
        if kind in changes:
            at = draw(st.sampled_from([j for j, c in enumerate(lookalike) if c.isascii() and test(c)]))
            lookalike = lookalike[:at] + chr(ord(lookalike[at]) + offset) + lookalike[at + 1 :]
            reasons.add("transaction_id:compatibility_chars")
    if "pad" in changes:
        lookalike = draw(st.sampled_from([lookalike + " ", " " + lookalike, lookalike + "  "]))
        reasons.add("transaction_id:whitespace")
    return plain, lookalike, reasons


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=4, max_size=12), st.data())
def test_look_alike_ids_are_one_id_on_every_path(rows: list[dict], data) -> None:
    """Ids that differ only by white space at the ends, Unicode spaces or full-width characters: the look-alike is
    refused by its rule and both are copies of one id, in validation and on the request path alike."""
    frame = _frame(rows)
    pairs = [data.draw(lookalike_pair(i)) for i in range(len(frame) // 2)]
    expected: dict[int, set[str]] = {}
    for k, (plain, lookalike, reasons) in enumerate(pairs):
        frame.loc[2 * k, "transaction_id"] = plain
        frame.loc[2 * k + 1, "transaction_id"] = lookalike
        expected[2 * k] = {"transaction_id:duplicate"}
        expected[2 * k + 1] = reasons | {"transaction_id:duplicate"}
    result = validate_frame(frame, SPEC)
    got = {
        int(frame.index[frame["transaction_id"] == tid][0]): set(r.split(";"))
        for tid, r in zip(result.quarantine["transaction_id"], result.quarantine["_reasons"], strict=True)
    }
    assert got == expected
    wire = {k: v.reshape(-1) for k, v in encode_rows(frame, SPEC).items()}
    _, status = CONTRACT.featurize(wire)
    assert {i for i, s in enumerate(status) if s != "ok"} == set(expected)
    for i in expected:
        assert status[i] in expected[i]


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, int]:
    """RFC 3339 text in any of its spellings (T, t or a space; Z, z or an offset; 0 to 9 fraction digits) and the
    instant it names, in nanoseconds since the epoch, computed apart from the parser."""
    when = draw(st.datetimes(datetime(1700, 1, 2), datetime(2200, 12, 30)))
    minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    digits = draw(st.integers(0, 9))
    fraction = draw(st.integers(0, 10**digits - 1)) if digits else 0
    sep = draw(st.sampled_from("Tt "))
    zone = draw(st.sampled_from("Zz")) if minutes == 0 and draw(st.booleans()) else None
    sign = "-" if minutes < 0 else "+"
    offset = zone or f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    text = f"{when:%Y-%m-%d}{sep}{when:%H:%M:%S}" + (f".{fraction:0{digits}d}" if digits else "") + offset
    seconds = (when.replace(microsecond=0) - datetime(1970, 1, 1)) // timedelta(seconds=1) - minutes * 60
    return text, seconds * 10**9 + fraction * 10 ** (9 - digits)


NOT_RFC3339 = [  # how a valid text becomes one only ISO 8601's other forms (or fromisoformat) would read
    lambda t: t.replace("-", "", 2).replace(":", "", 2),  # basic format
    lambda t: t[:10] + "X" + t[11:],  # another separator
    lambda t: t[:16] + t[19:],  # no seconds
    lambda t: t[:-3] + t[-2:] if t[-3] == ":" else t[:19] + ",5Z",  # +hhmm, or a comma fraction
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(rfc3339(), st.integers(0, len(NOT_RFC3339))), min_size=1, max_size=12))
def test_rfc3339_text_reads_alike_on_every_path(values: list[tuple[tuple[str, int], int]]) -> None:
    """Every spelling of RFC 3339 is read exactly (nanoseconds, lower-case t and z), and the forms outside it are
    refused, by validation and by the request path's scalar and vector parsers alike."""
    import numpy as np

    from inferline.features.wire import parse_instant, parse_instants

    texts, expected = [], []
    for (text, ns), damage in values:
        if damage < len(NOT_RFC3339):
            texts.append(NOT_RFC3339[damage](text))
            expected.append((None, "unparseable"))
        else:
            texts.append(text)
            expected.append((ns, None))
    assert [parse_instant(t, assume_utc=False) for t in texts] == expected, texts
    ns, problems = parse_instants(np.array([t.encode() for t in texts], dtype=object), assume_utc=False)
    vector = [
        (None if problems and problems[i] else int(ns[i]), problems[i] if problems else None) for i in range(len(ns))
    ]
    assert vector == expected
    # validation's reading of a file's text column
    frame = pd.DataFrame({"event_time": texts})
    normalized = normalize_frame(frame, SPEC)
    refused = normalized.reasons.get("event_time:unparseable", np.zeros(len(texts), dtype=bool))
    assert refused.tolist() == [e[1] == "unparseable" for e in expected]
    read = normalized.frame["event_time"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    assert [None if r else int(v) for r, v in zip(refused, read.view("int64"), strict=True)] == [e[0] for e in expected]


# a description's bytes: UTF-8 text with bytes that are not UTF-8 among them (no CSV delimiters, quotes or line ends)
undecodable = st.lists(
    st.one_of(
        st.text(TEXT_ALPHABET.replace(",", ""), min_size=1, max_size=6).map(str.encode),
        st.sampled_from([b"\\", b"\\x41", b"\\\\"]),  # backslashes, also spelling an escape
        st.binary(min_size=1, max_size=3).filter(lambda b: not set(b) & set(b',"\r\n\x00')),
    ),
    min_size=1,
    max_size=6,
).map(b"".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(undecodable, min_size=1, max_size=6))
def test_bytes_that_are_not_utf8_are_kept_escaped_losslessly(values: list[bytes]) -> None:
    """A CSV cell with bytes that are not UTF-8: its row is quarantined as ``description:invalid_utf8`` with the
    cell backslash-escaped, and ``codecs.escape_decode`` gives back exactly the bytes that arrived."""
    import codecs
    import tempfile
    from pathlib import Path

    from inferline.features.dataset import load_validated, quarantine_name

    frame = fraud.generate(len(values) + 1, seed=len(values))
    frame["description"] = ["Café"] + [f"@@{k}@@" for k in range(len(values))]  # Café: the file is UTF-8
    text = frame.to_csv(index=False).encode()
    for k, raw in enumerate(values):
        text = text.replace(f"@@{k}@@".encode(), raw)
    ids = frame["transaction_id"].tolist()[1:]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upstream.csv"
        path.write_bytes(text)
        valid, report = load_validated([path], SPEC, quarantine_dir=Path(tmp) / "q", max_invalid_share=1.0)
        q = Path(tmp) / "q" / quarantine_name(path)
        quarantine = pd.read_parquet(q) if q.exists() else pd.DataFrame(columns=["transaction_id", "description"])
    assert report.rows_in == len(frame) == len(valid) + len(quarantine)
    kept = dict(zip(quarantine["transaction_id"], quarantine["description"], strict=True))
    for tid, raw in zip(ids, values, strict=True):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            assert "description:invalid_utf8" in quarantine.set_index("transaction_id").loc[tid, "_reasons"]
            assert codecs.escape_decode(kept[tid].encode())[0] == raw
