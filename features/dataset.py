"""Reading raw data files through validation: valid rows flow on, bad rows go to quarantine with reasons."""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.artifacts import atomic_write_parquet, fingerprint_files
from inferline.features.contract import compile_contract
from inferline.features.duplicates import ROW, canonical_values, copies, mark_copies, unique_columns, with_row
from inferline.features.errors import PathNotFound, UserError
from inferline.features.rules import TEXT_KINDS
from inferline.features.spec import PipelineSpec
from inferline.features.validation import (
    NUMBER_KINDS,
    FileLevelError,
    ValidationResult,
    integer_cells,
    number_cells,
)

__all__ = [
    "BrokenFiles",
    "DatasetReport",
    "InvalidShareExceeded",
    "expand_paths",
    "load_validated",
    "quarantine_name",
    "read_csv",
    "read_raw",
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
    """Too many rows failed validation for the stage to trust the rest."""


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


def _unreadable(path: Path, what: str, exc: BaseException, fix: str) -> FileLevelError:
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


def read_raw(path: Path, spec: PipelineSpec | None = None) -> pd.DataFrame:
    """A data file as a frame; a file that cannot be read (empty, truncated, corrupt, not that format, not UTF-8)
    is a ``FileLevelError`` naming it, never a reader's traceback. A CSV file is read by ``spec`` where one is
    given (``read_csv``): CSV has no types, the spec does."""
    from pandas.errors import EmptyDataError, ParserError

    path = Path(path)
    if path.suffix == ".csv":
        try:
            return read_csv(path, spec)
        except (EmptyDataError, ParserError, UnicodeError, OSError) as exc:
            raise _unreadable(path, "CSV", exc, "a header line, then one line per row; re-export it") from exc
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise _unreadable(path, "Parquet", exc, "written to the end; re-export or re-copy it") from exc


# what pandas reads as a null in a number or timestamp cell by default (a text cell is null only when empty)
NA_TEXT = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
           "NA", "NULL", "NaN", "None", "n/a", "nan", "null")  # fmt: skip
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8
_UTF8_NON_ASCII = re.compile("[^\x00-\x7f\udc80-\udcff]")


def _scan_bytes(path: Path) -> tuple[bool, int, int]:
    """One pass over a text file's bytes: (holds a NUL, UTF-8 non-ASCII characters, bytes that are not UTF-8)."""
    nul, good, bad = False, 0, 0
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            nul = nul or b"\x00" in chunk
            if not chunk.isascii():
                text = decoder.decode(chunk)
                bad += len(_NOT_UTF8.findall(text))
                good += len(_UTF8_NON_ASCII.findall(text))
    return nul, good, bad


def read_csv(path: Path, spec: PipelineSpec | None = None) -> pd.DataFrame:
    """A CSV file, read as the spec declares its columns, losing nothing:

    - text, id, categorical and timestamp columns are read as text (``"007"`` stays ``"007"``; ``"NA"``,
      Namibia's code, is not a null): only an empty cell is a null;
    - a column with no value at all (an empty optional column, a header-only file) takes its declared type, so
      that an empty file passes like a 0-row Parquet file;
    - a NUL byte inside a cell survives (pandas' C parser would cut the value there), so validation sees it;
    - a number column with a cell that is no number (pandas then reads the column as text) keeps its numbers as
      numbers (``validation.number_cells``) and each other cell is its row's defect (``<column>:not_a_number``...);
      integer columns are read as text and parsed exactly (``validation.integer_cells``: no whole number beyond
      2**53 becomes a float because a cell is null), floats as Python's ``float`` reads them (``round_trip``);
    - bytes that are not UTF-8 survive as lone surrogates and are reported per row (``<column>:invalid_utf8``);
      a file where no byte sequence is UTF-8 is a ``FileLevelError`` that names its likely encoding."""
    nul, good, bad = _scan_bytes(path)
    if bad and not good:
        sample = Path(path).read_bytes()
        at = next(i for i, b in enumerate(sample) if b > 0x7F)
        snippet = sample[max(0, at - 12) : at + 12].decode("cp1252", errors="replace")
        raise FileLevelError(
            str(path),
            [
                {
                    "column": "<file>",
                    "problem": "not UTF-8",
                    "received": f"{bad} byte(s) that are not UTF-8 and no UTF-8 text; read as cp1252/latin-1 they "
                    f"say {snippet!r}",
                    "expected": "UTF-8 text (re-export the file as UTF-8, or convert it: "
                    f"iconv -f cp1252 -t utf-8 {Path(path).name} > fixed.csv)",
                }
            ],
        )
    columns = {c.name: c for c in (spec.columns if spec is not None else ())}
    # text and timestamps are read as text: a timestamp's text is parsed by validation, as on the request path
    text = [n for n, c in columns.items() if c.kind in TEXT_KINDS or c.kind == "timestamp"]
    # integers too, so that no whole number is read as a float (a null makes pandas read the column as float64)
    integers = [n for n, c in columns.items() if c.kind in NUMBER_KINDS and str(c.raw_dtype) == "int64"]
    limit = csv.field_size_limit()
    if nul:  # the python engine keeps a NUL; its csv module would refuse cells over 128 KiB (a length rule's job)
        csv.field_size_limit(2**31 - 1)
    try:
        frame = pd.read_csv(
            path,
            encoding="utf-8",
            encoding_errors="surrogateescape",
            engine="python" if nul else "c",
            dtype=dict.fromkeys([*text, *integers], str),
            keep_default_na=False,
            # the float the text names, as Python's float() reads it (the C engine's default is off by an ulp at
            # times); the python engine reads floats that way already
            float_precision=None if nul else "round_trip",
            na_values={n: ([""] if n in text else list(NA_TEXT)) for n in columns},
        )
    finally:
        csv.field_size_limit(limit)
    for name in frame.columns:
        col = columns.get(str(name))
        if col is None or frame[name].notna().any():
            continue
        if col.kind in TEXT_KINDS:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
        elif col.kind == "timestamp":
            frame[name] = pd.Series(pd.NaT, index=frame.index, dtype=col.raw_dtype)
        elif len(frame) == 0 and col.kind != "tensor":
            frame[name] = frame[name].astype(col.raw_dtype)
        elif col.kind == "numeric":
            frame[name] = frame[name].astype("float64")
    for name, col in columns.items():  # number columns read as text: their cells one by one (validation)
        if name in integers and name in frame.columns and len(frame):
            frame[name] = integer_cells(frame[name], col)
        elif col.kind in NUMBER_KINDS and name in frame.columns and frame[name].dtype == object:
            frame[name] = number_cells(frame[name], col)
    return frame


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
    ``duplicates`` policy (``_quarantine_repeats``, reason ``<column>:duplicate``); write each file's quarantine
    (``quarantine_name``: no two inputs collide; each row names its ``_source`` file) only when the whole input is
    usable; fail on too many bad rows (duplicates count among them)."""
    report = DatasetReport(fingerprint=fingerprint_files(paths))
    contract = compile_contract(spec)
    results: list[tuple[Path, ValidationResult]] = []
    canonical: list[dict[str, Any]] = []  # per file: its unique columns' canonical values
    broken: list[FileLevelError] = []
    for path in paths:
        try:
            raw = read_raw(path, spec)
            if not include_label:  # scoring input may carry the label; it is not used (as in the batch job)
                raw = raw.drop(columns=[spec.label], errors="ignore")
            result = contract.validate(with_row(raw), source=str(path), include_label=include_label, keep=(ROW,))
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
    total_in = report.rows_in
    share = report.rows_quarantined / total_in if total_in else 0.0
    if share > max_invalid_share:
        worst = max(results, key=lambda pr: pr[1].invalid_share)
        raise InvalidShareExceeded(
            f"{report.rows_quarantined} of {total_in} rows ({share:.1%}) failed validation, above the allowed "
            f"{max_invalid_share:.1%}; worst file {worst[0]} ({worst[1].invalid_share:.1%}, reasons "
            f"{worst[1].reason_counts}). Inspect the quarantine, fix upstream, or raise --max-invalid-share."
        )
    if quarantine_dir is not None:
        for path, result in results:
            if result.rows_quarantined:
                rows = result.quarantine.copy()
                rows.insert(1, SOURCE, pd.Series([str(path)] * len(rows), dtype="string"))
                atomic_write_parquet(Path(quarantine_dir) / quarantine_name(path), rows)
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
