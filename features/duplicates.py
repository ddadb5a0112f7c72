"""Repeated values of unique columns across a data set: one canonical form and one policy on every path.

A column declared ``unique=True`` holds each value once per data set: within a file and across the files (or the
batch job's partitions) of one stage. ``Column.duplicates`` says which copies of a repeated value are quarantined,
each with the reason ``<column>:duplicate``:

- ``"all"``: every copy;
- ``"all_but_first"``: every copy but the first in input order (files in sorted order, rows in file order).

The contract (``features.contract``) applies the policy within one frame; this module applies it across frames:

1. ``canonical_values``: a frame's unique columns in the form validation compares (``normalize_frame``, then the
   contract's canonical arrays): a text column declared ``normalization="nfc"`` compares NFC forms, so an NFD
   look-alike of an id is the same id, and (unless it is declared ``normalization="none"``) by look-alike key
   (``vocabulary.lookalike_key``: NFKC, white space trimmed), so ``"tx-1 "`` and ``"tx-１"`` are copies of ``"tx-1"``
   (their own rules refuse them as well: ``whitespace``, ``compatibility_chars``). A null, or a value that failed
   to parse (its canonical value is a stand-in: an integer null cast to 0, text that is not UTF-8), is never a
   copy of anything.
2. ``copies``: over the canonical values of every frame in input order, the copies the policy quarantines.
3. ``mark_copies``: one frame's ``ValidationResult`` with those copies quarantined: a valid copy moves to the
   quarantine, a copy already quarantined for another rule keeps its reasons and gains ``<column>:duplicate``
   (one row, one place, all its reasons); the reason's count is the rows that carry it.

"First" is positional: the first copy is the one kept even when it fails another rule (then it is quarantined for
that rule alone, and no copy is valid). It is the only rule every path can apply alike: the batch job's pre-pass
reads the unique columns alone and cannot know whether a copy in another partition is valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from inferline.features.normalize import as_arrived, normalize_frame
from inferline.features.spec import Column, DuplicatePolicy, PipelineSpec
from inferline.features.validation import ValidationResult
from inferline.features.vocabulary import TEXT_KINDS, lookalike_keys

if TYPE_CHECKING:
    from inferline.features.contract import Contract

__all__ = [
    "ROW",
    "canonical_values",
    "copies",
    "digests",
    "mark_copies",
    "repeated_values",
    "unique_columns",
    "with_row",
]

ROW = "__inferline_row__"  # a frame's row position, riding beside validation (``Contract.validate(keep=...)``)
REASON = "duplicate"
# two keys of pandas' SipHash for text: 128 bits per value, so no two distinct ids of any real input collide
_KEYS = ("inferline-dup-k1", "inferline-dup-k2")


def unique_columns(spec: PipelineSpec, include_label: bool = True) -> tuple[Column, ...]:
    """The columns whose values must not repeat within a data set."""
    return tuple(c for c in (spec.columns if include_label else spec.input_columns) if c.unique and c.kind != "tensor")


def canonical_values(contract: Contract, frame: pd.DataFrame, include_label: bool = True) -> dict[str, np.ndarray]:
    """A frame's unique columns (raw dtypes, as read) -> ``{column: object array}`` of the values validation
    compares, ``None`` where a row holds no comparable value (a null, or a value that failed to parse)."""
    spec = contract.spec
    columns = [c for c in unique_columns(spec, include_label) if c.name in frame.columns]
    if not columns:
        return {}
    normalized = normalize_frame(frame[[c.name for c in columns]].reset_index(drop=True), spec, include_label)
    canonical = contract.columns_of(normalized.frame, include_label)
    out: dict[str, np.ndarray] = {}
    for c in columns:
        values = np.asarray(canonical[c.name])
        absent = np.zeros(len(values), dtype=bool)
        for reason, mask in normalized.reasons.items():
            if reason.split(":", 1)[0] == c.name:  # reasons are <column>:<code> (features.contract)
                absent |= np.asarray(mask, dtype=bool)
        if c.kind in TEXT_KINDS:
            absent |= np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            if c.name in contract.lookalike_columns:  # values that look alike are one value
                values = np.array(lookalike_keys(values.tolist()), dtype=object)
        elif c.kind == "timestamp":
            absent |= values == np.iinfo(np.int64).min
        elif values.dtype.kind == "f":
            absent |= np.isnan(values)
        kept = values.astype(object)
        kept[absent] = None
        out[c.name] = kept
    return out


def digests(values: np.ndarray, kind: str) -> np.ndarray:
    """Canonical values of a column of ``kind`` (``canonical_values``) -> ``uint64 [n, 2]`` keys, equal exactly
    when the values are equal, for every real input (numbers and timestamps: pandas' bijective 64-bit mix; text:
    SipHash under two keys, 128 bits). Rows with no value get zeros: pass their ``present`` mask alongside. Small
    enough (16 bytes a row) to gather every partition's keys in one process."""
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    out = np.zeros((len(values), 2), dtype=np.uint64)
    if not present.any():
        return out
    chosen = values[present]
    number = np.float64 if kind == "numeric" else np.int64
    typed = chosen if kind in TEXT_KINDS else np.asarray(chosen.tolist(), dtype=number)
    for j, key in enumerate(_KEYS):
        out[present, j] = pd.util.hash_array(typed, hash_key=key, categorize=False)
    return out


def copies(keys: pd.DataFrame | pd.Series, present: np.ndarray, policy: DuplicatePolicy) -> np.ndarray:
    """Rows in input order (``keys``: one value, or one tuple of key columns, per row) -> the mask of the copies
    ``policy`` quarantines. Rows not ``present`` are no copies."""
    if not present.any():
        return np.zeros(len(present), dtype=bool)
    where = np.flatnonzero(present)
    chosen = keys.iloc[where]
    repeated = chosen.duplicated(keep="first" if policy == "all_but_first" else False).to_numpy(dtype=bool)
    out = np.zeros(len(present), dtype=bool)
    out[where[repeated]] = True
    return out


def repeated_values(keys: pd.DataFrame | pd.Series, present: np.ndarray) -> int:
    """How many distinct values occur more than once."""
    chosen = keys.iloc[np.flatnonzero(present)]
    again = chosen[chosen.duplicated(keep=False).to_numpy(dtype=bool)]
    return len(again.drop_duplicates())


def mark_copies(result: ValidationResult, marks: Mapping[str, Sequence[int] | np.ndarray]) -> ValidationResult:
    """``result`` (validated with ``keep=(ROW,)``) with the rows at the positions ``marks`` names per column
    quarantined as ``<column>:duplicate``, and the ``ROW`` column dropped. The quarantine stays in row order."""
    marked = {name: np.asarray(rows, dtype=np.int64) for name, rows in marks.items() if len(rows)}
    if not marked:
        return _without_row(result)
    valid_rows = result.valid[ROW].to_numpy(dtype=np.int64)
    held_rows = result.quarantine[ROW].to_numpy(dtype=np.int64)
    move = np.zeros(len(valid_rows), dtype=bool)
    for rows in marked.values():
        move |= np.isin(valid_rows, rows)
    moved = result.valid[move].copy()
    for name, arrived in result.originals.items():  # as the quarantine holds them: as they arrived
        if name in moved.columns:
            moved[name] = as_arrived(arrived.iloc[valid_rows[move]]).array
    moved.insert(0, "_reasons", pd.Series([""] * len(moved), index=moved.index, dtype="string"))
    quarantine = pd.concat([result.quarantine, moved], ignore_index=True)
    rows_all = np.concatenate([held_rows, valid_rows[move]])
    reasons = [set(r.split(";")) if r else set() for r in quarantine["_reasons"].tolist()]
    counts = dict(result.reason_counts)
    for name, rows in marked.items():
        reason = f"{name}:{REASON}"
        for i in np.flatnonzero(np.isin(rows_all, rows)).tolist():
            reasons[i].add(reason)
        counts[reason] = sum(reason in r for r in reasons)
    quarantine["_reasons"] = pd.Series([";".join(sorted(r)) for r in reasons], dtype="string")
    quarantine = quarantine.iloc[np.argsort(rows_all, kind="stable")].reset_index(drop=True)
    return _without_row(
        ValidationResult(
            valid=result.valid[~move].reset_index(drop=True),
            quarantine=quarantine,
            rows_in=result.rows_in,
            reason_counts=counts,
            normalizations=result.normalizations,
            originals=result.originals,
        )
    )


def _without_row(result: ValidationResult) -> ValidationResult:
    return ValidationResult(
        valid=result.valid.drop(columns=[ROW], errors="ignore"),
        quarantine=result.quarantine.drop(columns=[ROW], errors="ignore"),
        rows_in=result.rows_in,
        reason_counts=result.reason_counts,
        normalizations=result.normalizations,
        originals=result.originals,
    )


def with_row(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its row positions in the ``ROW`` column (validate it with ``keep=(ROW,)``)."""
    out = frame.reset_index(drop=True)
    out.insert(0, ROW, np.arange(len(out), dtype=np.int64))
    return out
