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

SPEC = fraud.SPEC
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
