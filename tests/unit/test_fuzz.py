"""Property-based fuzzing (issue 8 case 10): malformed input never gets a 5xx and the server stays live.

- The HTTP API: schemathesis generates requests for every operation of ``serving/openapi/kserve-v2.yaml`` (the Open
  Inference Protocol REST endpoints inferline serves), schema-conforming and schema-violating, plus requests shaped
  like the served ``fraud`` model's (the nine raw columns, JSON and binary tensor data) with hostile values, wrong
  shapes, wrong datatypes and broken framing, so that bodies get past parsing into validation. Every answer must be
  below 500; afterwards the server must still answer a good request.
- The request path in process (what the client encodes and Triton's preprocess model runs): hostile rows are either
  refused by the client with a ValueError naming the column, or scored row for row, each row ``ok`` or
  ``column:reason``, with finite features.

Budget: a few hundred requests, bounded by ``max_examples``; no sleeps.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.state import FeatureState, fit_state
from inferline.serving.client import encode_rows
from tests.fuzz_cases import API_DESCRIPTION, HOSTILE_FLOAT, HOSTILE_INT, INT64_MAX, INT64_MIN, SPEC, WIRE_DATATYPE

STATUS = re.compile(rf"^(ok|({'|'.join(re.escape(c.name) for c in SPEC.columns)}):[a-z0-9_]+)$")


# ---------------------------------------------------------------------------------------------------------------
# the API fuzz


def test_the_api_description_names_the_edge() -> None:
    """Its `servers` entry is the edge's default address (what `serve up` listens on), not Triton's port."""
    import yaml

    from inferline.serving.__main__ import build_parser

    servers = yaml.safe_load(API_DESCRIPTION.read_text())["servers"]
    up = build_parser().parse_args(["up"])
    assert [s["url"] for s in servers] == [f"http://127.0.0.1:{up.gateway_port}"] and up.http_port != up.gateway_port


# ---------------------------------------------------------------------------------------------------------------
# the request path in process: client encoding -> what Triton's preprocess model runs


@pytest.fixture(scope="module")
def state() -> FeatureState:
    return fit_state(fraud.generate(2_000, seed=0), SPEC)


OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))])
HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(max_codepoint=0x9F), max_size=8),  # C0/C1 control characters
    st.sampled_from(["", " ", "\x00", "\ufffd", "Ã©", "e\u0301", "\U0001f600", "ДЕПОЗИТ", "\u202e", "é" * 500]),
)
GARBAGE_TIMES = (
    *("", "now", "2026-W01", "1767225600", "1767225600.5", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00+00:00"),
    *("9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-12:00", "2026-01-01T00:00:00+24:00"),
)
HOSTILE_TIME = st.one_of(
    st.datetimes(timezones=st.none() | OFFSETS).map(lambda t: t.isoformat()),
    st.datetimes(timezones=st.none() | OFFSETS),
    st.sampled_from(GARBAGE_TIMES),
    HOSTILE_TEXT,
    st.none(),
)
TEXT_COLUMNS = [c.name for c in SPEC.input_columns if c.triton_dtype == "BYTES" and c.kind != "timestamp"]

hostile_row = st.fixed_dictionaries(
    {
        **{name: HOSTILE_TEXT | st.none() for name in TEXT_COLUMNS},
        "event_time": HOSTILE_TIME,
        "amount": HOSTILE_FLOAT | st.none(),
        "customer_age_days": HOSTILE_INT,
    }
)


def _check_scored(arrays: dict[str, np.ndarray], n: int, state: FeatureState) -> np.ndarray:
    """Run the preprocess model's path on wire arrays (flattened as Triton hands them) and check its contract."""
    features, status = compile_contract(SPEC, state).featurize({k: v.reshape(-1) for k, v in arrays.items()})
    assert len(status) == len(features) == n, "rows in == rows out"
    bad = [s for s in status if not isinstance(s, str) or not STATUS.match(s)]
    assert not bad, f"status must be 'ok' or 'column:reason', got {bad}"
    assert np.isfinite(features.numeric).all(), "features are finite for every row (neutral for refused rows)"
    assert ((features.categorical >= 0) & (features.categorical <= max(state.cardinalities()))).all()
    return status


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(hostile_row, min_size=1, max_size=8))
def test_hostile_rows_are_scored_row_for_row(rows: list[dict[str, Any]], state: FeatureState) -> None:
    for i, row in enumerate(rows):
        row["transaction_id"] = row["transaction_id"] if i % 2 else f"tx-{i}"  # mostly valid ids, some hostile
    status = _check_scored(encode_rows(rows, SPEC), len(rows), state)
    for row, s in zip(rows, status, strict=True):
        if s == "ok":
            assert row["amount"] is not None and math.isfinite(row["amount"]) and row["amount"] >= 0
            assert row["customer_age_days"] >= 0


# values the column's wire type cannot carry: past int64, a null or a fraction in INT64 (it has no null), text that is
# no number, a number past float64, a lone surrogate (no UTF-8 for it)
UNENCODABLE = {
    "int64_max+1": ("customer_age_days", INT64_MAX + 1),
    "int64_min-1": ("customer_age_days", INT64_MIN - 1),
    "2**70": ("customer_age_days", 2**70),
    "int_null": ("customer_age_days", None),
    "int_fraction": ("customer_age_days", 1.5),
    "int_text": ("customer_age_days", "x"),
    "float_text": ("amount", "abc"),
    "float_overflow": ("amount", 10**400),
    "text_surrogate": ("description", "a\udfffb"),
    "time_surrogate": ("event_time", "a\udfffb"),
}


@pytest.mark.parametrize(("column", "value"), list(UNENCODABLE.values()), ids=list(UNENCODABLE))
def test_unencodable_values_are_refused_naming_the_column(column: str, value: Any) -> None:
    rows = fraud.generate(3, seed=0).drop(columns=[SPEC.label]).to_dict("records")
    rows[1][column] = value
    with pytest.raises(ValueError, match=re.escape(column)):
        encode_rows(rows, SPEC)  # refused before anything is sent; never a silent cast


wire_bytes = st.one_of(
    st.binary(max_size=16),  # invalid UTF-8 included
    HOSTILE_TEXT.map(lambda t: t.encode("utf-8")),
    st.sampled_from([b"\xed\xa0\x80", b"a\xed\xbf\xbfb", b"\xc3\x28", b"\xff\xfe", b"\x00"]),  # surrogatepass, broken
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(1, 8))
def test_any_wire_tensors_of_the_contract_types_are_scored_row_for_row(
    data: st.DataObject, n: int, state: FeatureState
) -> None:
    """What Triton hands the preprocess model: any bytes in BYTES tensors, any FP64 and INT64 values."""
    arrays: dict[str, np.ndarray] = {}
    for c in SPEC.input_columns:
        if c.triton_dtype == "BYTES":
            values = data.draw(st.lists(wire_bytes, min_size=n, max_size=n), label=c.name)
            arrays[c.name] = np.array(values, dtype=np.object_).reshape(n, 1)
        elif c.triton_dtype == "FP64":
            arrays[c.name] = np.array(data.draw(st.lists(HOSTILE_FLOAT, min_size=n, max_size=n)), np.float64)
        else:
            arrays[c.name] = np.array(data.draw(st.lists(HOSTILE_INT, min_size=n, max_size=n)), np.int64)
    status = _check_scored(arrays, n, state)
    utf8_ok = {c: [_is_utf8(v) for v in arrays[c].reshape(-1)] for c in arrays if WIRE_DATATYPE[c] == "BYTES"}
    for i, s in enumerate(status):
        if s == "ok":
            assert all(ok[i] for ok in utf8_ok.values()), "a row with invalid UTF-8 is never ok"


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
