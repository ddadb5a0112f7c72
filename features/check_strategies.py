"""What the contract checks (``features.checks``) draw their values from, and the hypothesis settings they run under.

Each check drives one agreement between two lowerings of a pipeline spec with hypothesis. The values it draws are
the pipeline's own (``canonical_samples`` of its generated rows), the edge cases each kind of column meets on the
wire (``TEXT_EDGES``, nulls, NaN and Inf, far-off integers and timestamps, a tensor's elements at the edges of its
datatype: ``tensor_edges``) and anything hypothesis finds
(``values_of``); the request-path checks also damage wire arrays the way upstream systems do (``damage``).

hypothesis is imported inside the functions here, never at module import: ``features.checks`` imports its checks to
name them (``CHECKS``), and importing it (``inferline --help``, ``inferline generate``) must not load hypothesis; the
checks load it when they run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import string
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inferline.features.contract import compile_contract
from inferline.features.kernels import NAT
from inferline.features.spec import TENSOR_DTYPES, Column, PipelineSpec
from inferline.features.wire import encode_rows

if TYPE_CHECKING:
    from hypothesis import settings
    from hypothesis import strategies as st

__all__ = [
    "EXAMPLES",
    "TEXT_EDGES",
    "canonical_samples",
    "check_settings",
    "damage",
    "run_budget",
    "set_edge",
    "tensor_edges",
    "tensor_rows",
    "values_of",
    "wire_arrays",
]

EXAMPLES = 60  # hypothesis examples per property: the test suite's budget, and `inferline check`'s default

TEXT_EDGES = ["", " ", "\t", "ok", "Café", "CafÃ©", "a\x00b", "a\ufffdb", "#", "12345", "AB-12", "x" * 60, "Ünïcödé"]
# look-alikes (issue 30): padding, a run of spaces, a no-break and a thin space, full-width digits, a ligature
TEXT_EDGES += ["ok ", " ok", "o  k", "o\u00a0k", "o\u2009k", "１２", "ﬁle", "e\u0301"]

# the settings the checks run under: the default (hypothesis' example database included) when a test calls a check,
# run_checks' own (its example budget, no database folder left in the user's working directory) when it runs them
_SETTINGS: ContextVar[settings | None] = ContextVar("check_settings", default=None)


@functools.cache
def _default_settings() -> settings:
    """``EXAMPLES`` examples per property, no deadline (a pipeline's kernels may be slow), built on first use."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_settings() -> settings:
    """The settings a check's properties run under now: ``run_budget``'s inside ``run_checks``, else the default."""
    chosen = _SETTINGS.get()
    return _default_settings() if chosen is None else chosen


@contextlib.contextmanager
def run_budget(examples: int) -> Iterator[None]:
    """The checks run inside it use ``examples`` examples per property and write no example database."""
    from hypothesis import settings

    token = _SETTINGS.set(settings(_default_settings(), max_examples=examples, database=None))
    try:
        yield
    finally:
        _SETTINGS.reset(token)


def values_of(column: Column, samples: list[Any]) -> st.SearchStrategy[Any]:
    """Non-null canonical values of ``column``'s kind: the pipeline's own, edge cases, and anything hypothesis
    finds."""
    from hypothesis import strategies as st

    own = st.sampled_from(samples) if samples else st.nothing()
    if column.kind in ("id", "categorical", "text"):
        alphabet = st.sampled_from(string.ascii_letters + string.digits + " -_#é\x00\x1f\ufffdÃ©Ж")
        return st.one_of(own, st.sampled_from(TEXT_EDGES), st.text(alphabet, max_size=30), st.text(max_size=12))
    if column.kind == "numeric":
        edges = st.sampled_from([0.0, -0.0, 1e6, -1e6, 1e6 + 1, math.inf, -math.inf, 100.0, 100.5, -1.0])
        return st.one_of(own, edges, st.floats(allow_nan=False, width=64))
    if column.kind in ("integer", "label"):
        return st.one_of(own, st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 3, 4, 5, 8, -1]))
    return st.one_of(own, st.integers(-(2**62), 2**62), st.sampled_from([0, -1, 946684800 * 10**9]))


def tensor_edges(column: Column) -> list[Any]:
    """Element values a tensor column's rows meet at the edges of its datatype: its bounds, zero, one and minus one
    (what fits), NaN and the infinities for floats."""
    dtype = np.dtype(TENSOR_DTYPES[column.dtype or "FP32"])
    if dtype.kind == "b":
        return [False, True]
    if dtype.kind == "f":
        big = float(np.finfo(dtype).max)
        return [0.0, -0.0, 1.0, -1.0, big, -big, math.nan, math.inf, -math.inf]
    bounds = np.iinfo(dtype)
    return sorted({int(bounds.min), int(bounds.max), 0, 1, *([-1] if bounds.min < 0 else [])})


def tensor_rows(column: Column, samples: list[Any]) -> st.SearchStrategy[np.ndarray]:
    """Rows of a tensor column: the pipeline's own, with one element hypothesis chose set to an edge of the
    column's datatype (``tensor_edges``) or left as it is."""
    from hypothesis import strategies as st

    if not samples:
        return st.nothing()

    @st.composite
    def rows(draw: st.DrawFn) -> np.ndarray:
        row = np.array(draw(st.sampled_from(samples)), copy=True)
        if row.size and draw(st.booleans()):
            set_edge(row, column, draw)
        return row

    return rows()


def set_edge(row: np.ndarray, column: Column, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
    """One element of ``row`` (a non-empty tensor row of ``column``), which ``draw`` chooses, set to an edge of the
    column's datatype (``tensor_edges``), in place. ``draw``: a composite strategy's, or ``DataObject.draw``."""
    from hypothesis import strategies as st

    np.put(row, draw(st.integers(0, row.size - 1)), draw(st.sampled_from(tensor_edges(column))))


def wire_arrays(
    spec: PipelineSpec, frame: pd.DataFrame, refused: dict[int, str] | None = None
) -> dict[str, np.ndarray]:
    """``frame``'s input columns as the wire arrays a request carries: flat, a tensor column's ``[n, *shape]``.
    ``refused`` receives the rows the wire cannot carry, with their reason (``features.wire.encode_rows``)."""
    tensors = {c.name for c in spec.tensor_columns}
    arrays = encode_rows(frame, spec.input_columns, refused)
    return {k: v if k in tensors else v.reshape(-1) for k, v in arrays.items()}


def canonical_samples(spec: PipelineSpec, frame: pd.DataFrame, column: Column) -> list[Any]:
    """``column``'s canonical values in ``frame`` (nulls left out): what the pipeline's own rows look like."""
    arrays = compile_contract(spec).columns_of(frame, include_label=True)[column.name]
    if column.kind == "timestamp":
        return [int(v) for v in arrays if v != NAT]
    if column.kind == "numeric":
        return [float(v) for v in arrays if not np.isnan(v)]
    if column.kind in ("integer", "label"):
        return [int(v) for v in arrays]
    return [v for v in arrays if v is not None]


def damage(spec: PipelineSpec, frame: pd.DataFrame, data: st.DataObject) -> tuple[dict[str, np.ndarray], set[int]]:
    """Wire arrays of ``frame`` with cells hypothesis chose replaced by what goes wrong upstream (in a tensor
    column: one element of the row set to an edge of its datatype), and the rows touched."""
    from hypothesis import strategies as st

    frame = frame.reset_index(drop=True)
    arrays = wire_arrays(spec, frame)  # a tensor column stays [n, *shape]: one element of a row is damaged
    n = len(frame)
    touched: set[int] = set()
    for _ in range(data.draw(st.integers(0, max(1, n // 2)), label="cells")):
        i = data.draw(st.integers(0, n - 1), label="row")
        touched.add(i)
        column = data.draw(st.sampled_from(spec.input_columns), label="column")
        values = arrays[column.name]
        if column.triton_dtype == "BYTES":
            choices: list[Any] = [b"", b"\xff\xfe", b"  ", b"\x00bad", "Ã©t\ufffd".encode(), b"#12", b"12"]
            if column.kind == "timestamp":
                choices += [b"2026-01-05T10:00:00", b"1767225600", b"2026-02-30T00:00:00+00:00", b"1600-01-01"]
                choices += [b"2024-06-01 12:00:00.123456-07:00", b"2031-01-01T00:00:00Z"]
            if column.unique:
                choices.append(values[(i + 1) % n])
            values[i] = data.draw(st.sampled_from(choices), label="bytes")
        elif column.kind == "tensor":
            if values[i].size:
                set_edge(values[i], column, data.draw)
        elif column.triton_dtype == "FP64":
            values[i] = data.draw(st.sampled_from([np.nan, np.inf, -1.0, 1e7, 150.0, 0.0]), label="number")
        else:
            values[i] = data.draw(st.sampled_from([0, -3, 4, 7, 2**40]), label="integer")
    return arrays, touched
