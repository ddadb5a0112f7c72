"""Reading raw data files through validation, with a gate per file: valid rows flow on, bad rows go to quarantine
with reasons, and a file with too many of them refuses the whole input.

``load_validated`` reads each file (``read_raw``: CSV through ``features.csv_reader``, Parquet through
``features.parquet_reader``), validates it with the compiled contract, quarantines the copies of unique values
across files (``features.duplicates``) and the CSV records with the wrong field count, writes each file's
quarantine and applies the per-file ``max_invalid_share`` gate (``InvalidShareExceeded``).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import atomic_write_parquet, fingerprint_files
from inferline.features.contract import compile_contract
from inferline.features.csv_reader import Records, read_csv_records
from inferline.features.duplicates import ROW, canonical_values, copies, mark_copies, unique_columns, with_row
from inferline.features.parquet_reader import read_parquet
from inferline.features.spec import PipelineSpec
from inferline.features.validation import FileLevelError, ValidationResult, unreadable_file

__all__ = [
    "BrokenFiles",
    "DatasetReport",
    "InvalidShareExceeded",
    "expand_paths",
    "load_validated",
    "quarantine_name",
    "read_raw",
    "refusal_reason",
]

SOURCE = "_source"  # the input file of each quarantined row


class BrokenFiles(FileLevelError):
    """Every file of a stage's input that cannot be read or breaks the schema, reported in one pass."""

    def __init__(self, errors: list[FileLevelError], files: int) -> None:
        self.errors = errors
        problems = [{**p, "file": e.source} for e in errors for p in e.problems]
        UserError.__init__(
            self,
            f"{len(errors)} of {files} input files cannot be used (nothing of this input was used or "
            "quarantined):\n" + "\n".join(str(e) for e in errors),
        )
        self.source = ", ".join(e.source for e in errors)
        self.problems = problems


class InvalidShareExceeded(UserError, ValueError):
    """One or more files hold more invalid rows than ``max_invalid_share`` allows (the gate is per file: a bad file
    is not hidden by good ones beside it). ``files`` names each such file with its counts and reasons;
    ``quarantine`` is where the refused rows were kept (``None``: they were not written)."""

    docs = "explanation/data-validation.md"

    reason = "invalid_share_exceeded"

    def __init__(self, files: list[dict[str, Any]], of: int, max_invalid_share: float, quarantine: Path | None) -> None:
        self.files, self.of, self.max_invalid_share, self.quarantine = files, of, max_invalid_share, quarantine
        listed = "; ".join(
            f"{f['file']}: {f['rows_quarantined']} of {f['rows_in']} rows ({f['invalid_share']:.1%}, reasons "
            f"{f['reasons']})"
            for f in files
        )
        where = (
            f"the refused rows are kept in {quarantine} (one <stem>-<digest>.quarantine.parquet per input, with "
            "reasons): inspect them"
            if quarantine is not None
            else "see the refused rows with `inferline validate FILE... --quarantine DIR`"
        )
        super().__init__(
            f"{len(files)} of {of} input file(s) failed validation above the allowed {max_invalid_share:.1%} of "
            f"invalid rows per file: {listed}. Nothing of this input was used; {where}, fix the upstream data, or "
            "raise --max-invalid-share"
        )

    def kept_in(self, quarantine: Path) -> InvalidShareExceeded:
        """The same refusal, naming the folder its quarantine was moved to."""
        return InvalidShareExceeded(self.files, self.of, self.max_invalid_share, quarantine)


def refusal_reason(exc: BaseException) -> str:
    """The machine-readable reason of a stage refusing its data, for alerts: ``invalid_share_exceeded``,
    ``unreadable_file`` (a file that cannot be read at all), ``schema_break`` (a file whose columns break the
    spec), ``no_data`` (no input file found), an exception's own ``reason`` (``NotEnoughData``: ``not_enough_rows``,
    ``missing_classes``), else ``refused``."""
    own = getattr(exc, "reason", None)
    if isinstance(own, str):
        return own
    if isinstance(exc, FileLevelError):
        return "unreadable_file" if all(p.get("column") == "<file>" for p in exc.problems) else "schema_break"
    if isinstance(exc, FileNotFoundError):
        return "no_data"
    return "refused"


@dataclass
class DatasetReport:
    files: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        return sum(f["rows_in"] for f in self.files)

    @property
    def rows_valid(self) -> int:
        return sum(f["rows_valid"] for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        return sum(f["rows_quarantined"] for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "files": self.files,
            "fingerprint": self.fingerprint.get("sha256"),
        }


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def expand_paths(patterns: list[str] | list[Path], on_skip: Callable[[str], None] | None = _note) -> list[Path]:
    """Files named directly, by glob, or as directories (every ``*.parquet`` inside), sorted, no duplicates. What
    a directory holds besides (CSV files, subdirectories, other files) is not read, and ``on_skip`` says so."""
    out: set[Path] = set()
    for pattern in patterns:
        p = Path(pattern)
        if p.is_dir():
            found = set(p.glob("*.parquet"))
            out.update(found)
            skipped = sorted(x.name + ("/" if x.is_dir() else "") for x in p.iterdir() if x not in found)
            skipped = [x for x in skipped if not x.startswith((".", "_"))]  # hidden files, _quarantine/ ...
            if skipped and on_skip is not None:
                on_skip(
                    f"{p}: read {len(found)} *.parquet file(s) and skipped {len(skipped)} other entr"
                    f"{'y' if len(skipped) == 1 else 'ies'} {skipped[:5]}{' ...' if len(skipped) > 5 else ''}: a "
                    "directory is read for *.parquet, not recursively; name CSV files or subdirectories explicitly"
                )
        elif any(ch in str(pattern) for ch in "*?["):
            out.update(Path(x) for x in glob.glob(str(pattern)))
        elif p.exists():
            out.add(p)
        else:
            raise PathNotFound(
                f"no such data file or directory: {str(pattern)!r}; expected Parquet/CSV files, globs or "
                "directories of *.parquet files: check the path"
            )
    if not out:
        raise PathNotFound(
            f"no Parquet files matched {[str(p) for p in patterns]}; expected at least one *.parquet file (a "
            "directory is searched for *.parquet, not recursively): generate data with `inferline generate`"
        )
    return sorted(out)


def read_raw(path: Path, spec: PipelineSpec | None = None) -> pd.DataFrame:
    """A data file as a frame; a file that cannot be read (empty, truncated, corrupt, not that format, not UTF-8)
    is a ``FileLevelError`` naming it, never a reader's traceback or an aborted process. A CSV file is read by
    ``spec`` where one is given (``read_csv``): CSV has no types, the spec does. A CSV record whose field count
    differs from the header's is an all-null row here; ``load_validated`` quarantines it with its reason."""
    return _read_records(path, spec)[0]


def _read_records(path: Path, spec: PipelineSpec | None) -> tuple[pd.DataFrame, Records]:
    """``read_raw``, and the rows of a CSV file whose records had the wrong number of fields."""
    from pandas.errors import EmptyDataError, ParserError

    path = Path(path)
    if path.suffix == ".csv":
        try:
            return read_csv_records(path, spec)
        except (EmptyDataError, ParserError, UnicodeError, OSError, csv.Error) as exc:
            raise unreadable_file(path, "CSV", exc, "a header line, then one line per row; re-export it") from exc
    return read_parquet(path), {}


def quarantine_name(path: Path) -> str:
    """The quarantine file of input ``path``: its stem and a digest of its full path, so two inputs with one
    name in different directories never write the same file."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:10]
    return f"{Path(path).stem}-{digest}.quarantine.parquet"


def load_validated(
    paths: list[Path],
    spec: PipelineSpec,
    quarantine_dir: Path | None = None,
    include_label: bool = True,
    max_invalid_share: float = 0.05,
) -> tuple[pd.DataFrame, DatasetReport]:
    """Validate every file and report every broken one in one pass (``BrokenFiles``); quarantine the rows that
    fail, and the copies of a value of a ``unique=True`` column that repeats within the data set, by the column's
    ``duplicates`` policy (``_quarantine_repeats``, reason ``<column>:duplicate``); a CSV record whose field count
    differs from its header's is its own row's defect (``_row:too_few_fields`` / ``_row:too_many_fields``, its
    text kept in ``_record``; never shifted into other columns).

    The gate is per file: a file whose share of quarantined rows (duplicates count among them) is above
    ``max_invalid_share`` refuses the whole input (``InvalidShareExceeded`` naming every such file), however many
    good rows the other files hold. Each file's quarantine (``quarantine_name``: no two inputs collide; each row
    names its ``_source`` file) is written when the files could be read, refused or not, so a refusal keeps its
    evidence; nothing is quarantined when a file cannot be read or breaks the schema."""
    report = DatasetReport(fingerprint=fingerprint_files(paths))
    contract = compile_contract(spec)
    results: list[tuple[Path, ValidationResult]] = []
    canonical: list[dict[str, Any]] = []  # per file: its unique columns' canonical values
    broken: list[FileLevelError] = []
    for path in paths:
        try:
            raw, records = _read_records(path, spec)
            if not include_label:  # scoring input may carry the label; it is not used (as in the batch job)
                raw = raw.drop(columns=[spec.label], errors="ignore")
            result = contract.validate(with_row(raw), source=str(path), include_label=include_label, keep=(ROW,))
            if records:
                result = _refuse_records(result, records)
            results.append((path, result))
            canonical.append(canonical_values(contract, raw, include_label))
        except FileLevelError as exc:
            broken.append(exc)
    if broken:
        raise broken[0] if len(paths) == 1 else BrokenFiles(broken, len(paths))
    _quarantine_repeats(results, canonical, spec, include_label)
    id_col = spec.id_column.name if spec.id_column else None
    for path, result in results:
        samples = [
            {"row_id": str(row[id_col]) if id_col else None, "reasons": row["_reasons"]}
            for row in result.quarantine.head(3).to_dict("records")
        ]
        report.files.append({"file": str(path), **result.summary(), "samples": samples})
    if quarantine_dir is not None:  # before the gate: a refused input keeps its evidence
        for path, result in results:
            if result.rows_quarantined:
                rows = result.quarantine.copy()
                rows.insert(1, SOURCE, pd.Series([str(path)] * len(rows), dtype="string"))
                atomic_write_parquet(Path(quarantine_dir) / quarantine_name(path), rows)
    over = [  # each file's summary is in the report already (in the order of results)
        {
            "file": f["file"],
            "rows_in": f["rows_in"],
            "rows_quarantined": f["rows_quarantined"],
            "invalid_share": r.invalid_share,
            "reasons": f["reasons"],
        }
        for f, (_, r) in zip(report.files, results, strict=True)
        if r.invalid_share > max_invalid_share
    ]
    if over:
        kept = Path(quarantine_dir) if quarantine_dir is not None else None
        raise InvalidShareExceeded(over, len(results), max_invalid_share, kept)
    parts = [result.valid for _, result in results]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame, report


def _quarantine_repeats(
    results: list[tuple[Path, ValidationResult]],
    canonical: list[dict[str, Any]],
    spec: PipelineSpec,
    include_label: bool,
) -> None:
    """The copies of a repeated value of each unique column, over every file in input order (files sorted, rows
    in file order), quarantined in their own file by the column's policy (``features.duplicates``): ``"all"``
    moves every copy, the first one in an earlier file too; ``"all_but_first"`` keeps the first. A copy already
    quarantined for another rule keeps its reasons and gains ``<column>:duplicate``. Copies within one file were
    found by the contract already; the same copies are found here again, and each row carries the reason once.
    A column that is not declared unique (a customer id, an id column without ``unique=True``) may repeat."""
    sizes = [result.rows_in for _, result in results]
    bounds = np.cumsum([0, *sizes])
    marks: list[dict[str, np.ndarray]] = [{} for _ in results]
    for column in unique_columns(spec, include_label):
        if not all(column.name in values for values in canonical):
            continue
        values = np.concatenate([v[column.name] for v in canonical]) if canonical else np.zeros(0, dtype=object)
        present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
        chosen = copies(pd.Series(values, dtype=object), present, column.duplicates)
        for i in range(len(results)):
            marks[i][column.name] = np.flatnonzero(chosen[bounds[i] : bounds[i + 1]])
    for i, (path, result) in enumerate(results):
        results[i] = (path, mark_copies(result, marks[i]))


def _refuse_records(result: ValidationResult, records: Records) -> ValidationResult:
    """``result`` (validated with ``keep=(ROW,)``) with the rows of CSV records that had the wrong field count
    quarantined with that reason alone (their nulls are the reader's stand-in, not what arrived) and their text
    in ``_record``; the counts of reasons are those of the quarantine. The quarantine stays in row order."""
    positions = np.fromiter(records, dtype=np.int64, count=len(records))
    move = np.isin(result.valid[ROW].to_numpy(dtype=np.int64), positions)
    moved = result.valid[move].copy()
    moved.insert(0, "_reasons", pd.Series([""] * len(moved), index=moved.index, dtype="string"))
    quarantine = pd.concat([result.quarantine, moved], ignore_index=True)
    rows = quarantine[ROW].to_numpy(dtype=np.int64)
    reasons = quarantine["_reasons"].astype(object).tolist()
    texts: list[str | None] = [None] * len(rows)
    for i, row in enumerate(rows.tolist()):
        if row in records:
            reasons[i], texts[i] = records[row]
    quarantine["_reasons"] = pd.Series(reasons, dtype="string")
    quarantine.insert(1, "_record", pd.Series(texts, dtype="string"))
    quarantine = quarantine.iloc[np.argsort(rows, kind="stable")].reset_index(drop=True)
    counts = Counter(r for text in quarantine["_reasons"].tolist() for r in str(text).split(";") if r)
    return ValidationResult(
        valid=result.valid[~move].reset_index(drop=True),
        quarantine=quarantine,
        rows_in=result.rows_in,
        reason_counts=dict(counts),
        normalizations=result.normalizations,
        originals=result.originals,  # the duplicate pass after it moves rows as they arrived
    )
