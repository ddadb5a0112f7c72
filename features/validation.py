"""Validation of data sets, built from the compiled contract (``features.contract``).

``validate_frame``: a data set (a Parquet file, a partition). Each column's declared policy is applied first
(``normalize_frame``: timezones, RFC 3339 text, text held as objects); pandera checks the structure lazily, so that
every structural break (missing/extra columns, dtype changes) is reported at once as ``FileLevelError``; the
contract's vector evaluator checks the rows, and every failing row goes to quarantine with all its reasons
(``column:code``). ``build_schema`` is the full pandera schema of the same rules, for users and for the contract
suite. Rows in = rows valid + rows quarantined, always.

A frame's cells are made canonical first by ``features.normalize``. A file that cannot be used at all is a
``FileLevelError``: its readers (``features.csv_reader``, ``features.parquet_reader``) raise one through
``unreadable_file`` and ``refuse_repeated_names``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.features.column_plan import DUPLICATE, NULL
from inferline.features.normalize import (
    BEYOND_FLOAT64,
    BEYOND_INT64,
    NON_ASCII_DIGITS,
    NOT_A_NUMBER,
    as_arrived,
    normalize_frame,
    number_of,
    number_problem,
)
from inferline.features.spec import Column, PipelineSpec
from inferline.features.vocabulary import NUMBER_KINDS, TEXT_KINDS

if TYPE_CHECKING:
    from inferline.features.contract import Contract

__all__ = [
    "FileLevelError",
    "ValidationResult",
    "build_schema",
    "merge_reasons",
    "refuse_repeated_names",
    "unreadable_file",
    "validate_frame",
    "validate_with",
]


class FileLevelError(UserError, ValueError):
    """A whole file (or partition) breaks the schema: no row of it can be trusted."""

    docs = "explanation/data-validation.md"

    def __init__(self, source: str, problems: list[dict[str, Any]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"  - column {p['column']!r}: {p['problem']} (received {p['received']}, expected {p['expected']})"
            for p in problems
        ]
        unreadable = all(p["column"] == "<file>" for p in problems)
        heading = "cannot be read" if unreadable else "schema does not match pipeline spec"
        advice = (
            "Nothing of this file was used."
            if unreadable
            else "Fix the upstream export or bump the pipeline spec (features/pipelines/) and retrain; "
            "no value was cast silently."
        )
        super().__init__(f"{source}: {heading}:\n" + "\n".join(lines) + "\n" + advice)


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame  # the failing rows, plus a `_reasons` column ("col:rule;col:rule")
    rows_in: int
    reason_counts: dict[str, int] = field(default_factory=dict)
    normalizations: list[dict[str, Any]] = field(default_factory=list)
    # columns as they arrived, by row position in the validated frame, where the canonical form lost what arrived
    # (``Normalized.originals``): a row moved to the quarantine later (``features.duplicates``) shows them too
    originals: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def invalid_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "reasons": dict(sorted(self.reason_counts.items())),
            "examples": self.examples(),
            "normalizations": self.normalizations,
        }

    def examples(self) -> dict[str, str]:
        """Per reason (``<column>:<code>``), the value of the first quarantined row that carries it, as it arrived
        (``repr``, shortened): what a person needs to see beside the count."""
        out: dict[str, str] = {}
        wanted = {r for r in self.reason_counts if r.split(":", 1)[0] in self.quarantine.columns}
        if not wanted or "_reasons" not in self.quarantine.columns:
            return out
        for i, reasons in enumerate(self.quarantine["_reasons"].tolist()):
            for reason in set(str(reasons).split(";")) & wanted:
                value = self.quarantine[reason.split(":", 1)[0]].iloc[i]
                out[reason] = _shorten(repr(value.item() if isinstance(value, np.generic) else value), 60)
            wanted -= set(out)
            if not wanted:
                break
        return dict(sorted(out.items()))


def unreadable_file(path: Path, what: str, exc: BaseException, fix: str) -> FileLevelError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return FileLevelError(
        str(path),
        [
            {
                "column": "<file>",
                "problem": f"not readable as {what}",
                "received": f"{type(exc).__name__}: {reason}",
                "expected": f"a complete {what} file ({fix})",
            }
        ],
    )


def refuse_repeated_names(path: Path, names: list[str]) -> None:
    """A ``FileLevelError`` naming each column name that ``names`` (a file's header or schema) repeats."""
    repeated = {n: [i for i, m in enumerate(names) if m == n] for n in names if names.count(n) > 1}
    if repeated:
        raise FileLevelError(
            str(path),
            [
                {
                    "column": name,
                    "problem": "column name repeated",
                    "received": f"{len(where)} columns named {name!r} (positions {where})",
                    "expected": "each column named once (rename or drop the repeated column upstream)",
                }
                for name, where in repeated.items()
            ],
        )


def build_schema(spec: PipelineSpec, include_label: bool = True) -> Any:
    """The pandera schema of a pipeline's raw data: exact dtypes (no coercion), nullability, rules, uniqueness."""
    from inferline.features.contract import compile_contract

    return compile_contract(spec).schema(include_label)


def merge_reasons(parsed: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
    """Reasons found while parsing, then the rules' reasons; a value that failed to parse is reported as such, not
    also as a null (its parsed value is empty) or a duplicate (its parsed value is a stand-in that other failed
    rows share)."""
    merged = dict(parsed)
    failed: dict[str, Any] = {}
    for reason, mask in parsed.items():
        column = reason.split(":", 1)[0]
        failed[column] = failed[column] | mask if column in failed else mask
    for reason, mask in checked.items():
        column, code = reason.split(":", 1)
        if code in (NULL, DUPLICATE) and column in failed:
            mask = mask & ~failed[column]
            if not mask.any():
                continue
        merged[reason] = merged[reason] | mask if reason in merged else mask
    return merged


def validate_frame(
    frame: pd.DataFrame, spec: PipelineSpec, source: str = "<frame>", include_label: bool = True
) -> ValidationResult:
    """Validate a data set; raise ``FileLevelError`` for structural breaks, quarantine failing rows. Compiles the
    contract for this call (``Contract.validate`` reuses a compiled one)."""
    from inferline.features.contract import compile_contract

    return validate_with(compile_contract(spec), frame, source, include_label)


def _structural_problems(cases: Any, spec: PipelineSpec, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """pandera's failure cases as one problem per column: what was received (the dtype, or a few of the values
    that break it with their types, and how many), what was expected, and how to fix it."""
    problems: list[dict[str, Any]] = []
    dtype_breaks: dict[str, list[Any]] = {}
    for case in cases.itertuples():
        check = str(case.check)
        if check == "column_in_dataframe":
            problems.append(
                {"column": str(case.failure_case), "problem": "missing", "received": "no such column",
                 "expected": "present (add it upstream, or drop it from the spec and retrain)"}
            )  # fmt: skip
        elif check == "column_in_schema":
            problems.append(
                {"column": str(case.failure_case), "problem": "unexpected column", "received": "present",
                 "expected": "absent (strict schema: drop it upstream, or declare it in the spec)"}
            )  # fmt: skip
        elif check.startswith("dtype("):
            dtype_breaks.setdefault(str(case.column), []).append(case.failure_case)
        else:
            problems.append(
                {"column": str(case.column), "problem": check, "received": str(case.failure_case),
                 "expected": "see the pipeline spec"}
            )  # fmt: skip
    for name, failures in dtype_breaks.items():
        problems.append(_dtype_problem(spec.column(name), frame[name] if name in frame.columns else None, failures))
    return problems


def _dtype_problem(col: Column, values: pd.Series | None, failures: list[Any]) -> dict[str, Any]:
    expected = str(col.raw_dtype)
    whole_column = len(failures) == 1 and isinstance(failures[0], str) and _is_dtype_name(failures[0])
    received = failures[0] if whole_column else None
    offending: list[Any] = []
    if values is not None and (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
        wanted = str if col.kind in TEXT_KINDS else (int, float)
        offending = [v for v in values.dropna().tolist() if not isinstance(v, wanted) or isinstance(v, bool)]
    elif not whole_column:
        offending = failures
    problem = "dtype changed"
    if offending:
        received = f"{len(offending)} value(s) of another type, such as {_examples(offending)}"
    if col.kind in NUMBER_KINDS and offending and all(isinstance(v, str) for v in offending):
        problem = "numbers arrive as text"
        received, expected = _numbers_as_text(offending, str(col.raw_dtype) == "int64", expected)
    elif col.kind in TEXT_KINDS:
        expected = f"{expected}: text values (write the column as strings upstream, e.g. '1042', not 1042)"
    elif col.kind == "timestamp":
        expected = f"{expected}: timestamps, or RFC 3339 text with an offset ('2026-03-01T12:00:00+01:00')"
    else:
        expected = f"{expected} (fix the upstream export, or change the column's kind in the spec and retrain)"
    return {"column": col.name, "problem": problem, "received": received, "expected": expected}


# what each kind of number text is, and how to write it instead (``number_problem``'s codes)
_TEXT_NUMBERS = {
    NOT_A_NUMBER: ("not a number", "without thousands separators, units or currency signs (1234.50, not '1,234.50')"),
    NON_ASCII_DIGITS: ("in digits other than ASCII 0-9", "in ASCII digits (123, not '１２３' or '١٢٣')"),
    BEYOND_FLOAT64: ("beyond float64's range (|x| < 1.8e308)", "within float64's range, or null where unknown"),
    BEYOND_INT64: ("outside int64's range (-2**63 to 2**63-1)", "within int64's range"),
}


def _numbers_as_text(texts: list[str], integer: bool, dtype: str) -> tuple[str, str]:
    """(received, expected) for a number column whose values are text: each kind of text that is no number
    named with a few of its values (``number_problem``), and what to write instead."""
    kinds: dict[str, list[str]] = {}
    for text in texts:
        if number_of(text, integer) is None:
            kinds.setdefault(number_problem(text, integer), []).append(text)
    received = f"{len(texts)} value(s) as text"
    if not kinds:
        received += f", such as {_examples(texts)}"
    for code, (what, _) in _TEXT_NUMBERS.items():
        if code in kinds:
            received += f"; {len(kinds[code])} of them {what}, such as {_examples(kinds[code])}"
    how = [fix for code, (_, fix) in _TEXT_NUMBERS.items() if code in kinds or code == NOT_A_NUMBER]
    return received, f"{dtype} numbers: write them as numbers, " + ", ".join(how)


def _examples(values: list[Any]) -> str:
    distinct = list(dict.fromkeys(map(_hashable, values[:50])))[:3]
    return ", ".join(_shorten(f"{v!r}", 40) + f" ({type(v).__name__})" for v in distinct)


def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_dtype_name(text: str) -> bool:
    try:
        pd.api.types.pandas_dtype(text)
    except (TypeError, ValueError):  # numpy reads some text as a type spec ('2026-01-05', '0x1p-3') and fails
        return False
    return True


def validate_with(
    contract: Contract,
    frame: pd.DataFrame,
    source: str = "<frame>",
    include_label: bool = True,
    keep: Sequence[str] = (),
) -> ValidationResult:
    """``validate_frame`` with a compiled contract: normalize, pandera for the structure, the contract's vector
    evaluator for the rows (measured faster than pandera's own lazy row checks: benchmarks/validation_bench.py)."""
    spec = contract.spec
    frame = frame.reset_index(drop=True)
    kept = frame[list(keep)] if keep else None
    if keep:
        frame = frame.drop(columns=list(keep))
    normalized = normalize_frame(frame, spec, include_label)
    frame, parse_reasons, notes = normalized.frame, normalized.reasons, normalized.notes
    cases = contract.check_structure(frame, include_label)
    if cases is not None and len(cases):
        raise FileLevelError(source, _structural_problems(cases, spec, frame))
    n = len(frame)
    checked = contract.row_reasons(frame, include_label)
    merged = merge_reasons(parse_reasons, checked)
    bad = np.zeros(n, dtype=bool)
    for mask in merged.values():
        bad |= mask
    reasons = {int(i): [r for r, mask in merged.items() if mask[i]] for i in np.flatnonzero(bad)}
    counts = {r: int(mask.sum()) for r, mask in merged.items()}
    if kept is not None:
        frame = pd.concat([kept, frame], axis=1)
    refused = frame[bad]
    if normalized.originals and bad.any():
        refused = refused.copy()
        for name, values in normalized.originals.items():
            refused[name] = as_arrived(values[bad]).array  # its own dtype (nullable integers stay exact)
    return ValidationResult(
        valid=frame[~bad].reset_index(drop=True),
        quarantine=_quarantine(refused, reasons),
        rows_in=n,
        reason_counts=counts,
        normalizations=notes,
        originals=normalized.originals,
    )


def _quarantine(rows: pd.DataFrame, reasons: Mapping[int, list[str]]) -> pd.DataFrame:
    out = rows.copy()
    out.insert(
        0, "_reasons", pd.Series([";".join(sorted(reasons[i])) for i in rows.index], index=rows.index, dtype="string")
    )
    return out.reset_index(drop=True)
