"""Reading raw data files through validation: valid rows flow on, bad rows go to quarantine with reasons."""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import io
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import atomic_write_parquet, fingerprint_files
from inferline.features.contract import compile_contract
from inferline.features.duplicates import ROW, canonical_values, copies, mark_copies, unique_columns, with_row
from inferline.features.rules import NUMBER_KINDS, TEXT_KINDS
from inferline.features.spec import PipelineSpec
from inferline.features.validation import (
    FileLevelError,
    ValidationResult,
    integer_cells,
    number_cells,
)

__all__ = [
    "BrokenFiles",
    "DatasetReport",
    "InvalidShareExceeded",
    "decode_dictionaries",
    "expand_paths",
    "load_validated",
    "quarantine_name",
    "read_csv",
    "read_parquet",
    "read_raw",
    "refusal_reason",
    "refuse_repeated_names",
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
    is a ``FileLevelError`` naming it, never a reader's traceback or an aborted process. A CSV file is read by
    ``spec`` where one is given (``read_csv``): CSV has no types, the spec does. A CSV record whose field count
    differs from the header's is an all-null row here; ``load_validated`` quarantines it with its reason."""
    return _read_records(path, spec)[0]


Records = dict[int, tuple[str, str]]  # row position -> (reason, the record's text as it arrived)


def _read_records(path: Path, spec: PipelineSpec | None) -> tuple[pd.DataFrame, Records]:
    """``read_raw``, and the rows of a CSV file whose records had the wrong number of fields."""
    from pandas.errors import EmptyDataError, ParserError

    path = Path(path)
    if path.suffix == ".csv":
        try:
            return _read_csv(path, spec)
        except (EmptyDataError, ParserError, UnicodeError, OSError, csv.Error) as exc:
            raise _unreadable(path, "CSV", exc, "a header line, then one line per row; re-export it") from exc
    return read_parquet(path), {}


def read_parquet(path: Path, row_groups: Sequence[int] | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file (or some of its row groups and columns) as a frame, with pyarrow; every stage reads Parquet
    input through here. Contract:

    - a file that cannot be read (truncated, not Parquet, a corrupt page) is a ``FileLevelError`` naming it. Pages
      are decoded on the calling thread (``use_threads=False``): pyarrow's threaded decode of a corrupt page raised,
      then aborted the process at exit now and then (``terminate called without an active exception``, exit 134:
      26 of 40 runs of ``inferline validate`` on the corrupt-page file of tests/system/test_defects.py; 0 of 40 on the
      calling thread), because decode tasks were still in flight. Page checksums are verified where the
      writer stored them (``page_checksum_verification``);
    - repeated column names are refused, naming them (a frame cannot hold two columns of one name);
    - dictionary-encoded columns (pandas categoricals, Arrow dictionary arrays) are decoded to their values: a
      dictionary is how the column was stored, not what the data is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as file:
            refuse_repeated_names(path, file.schema_arrow.names)
            if row_groups is None:
                table = file.read(columns=columns, use_threads=False)
            else:
                table = file.read_row_groups(list(row_groups), columns=columns, use_threads=False)
            table = decode_dictionaries(table)
            return table.to_pandas(use_threads=False)
    except (OSError, ValueError, pa.ArrowException) as exc:  # pyarrow's ArrowInvalid is a ValueError
        if isinstance(exc, FileLevelError):
            raise
        raise _unreadable(path, "Parquet", exc, "truncated, or a page is corrupt; re-export or re-copy it") from exc


def decode_dictionaries(table: Any) -> Any:
    """A pyarrow table (or an empty one made from a schema) with each dictionary column cast to its value type."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, f.type.value_type, f.nullable, f.metadata) if pa.types.is_dictionary(f.type) else f
        for f in table.schema
    ]
    if all(a is b for a, b in zip(fields, table.schema, strict=True)):
        return table
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


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
      a file where no byte sequence is UTF-8 is a ``FileLevelError`` that names its likely encoding (UTF-16 and
      UTF-32, by their byte order mark or their NUL bytes, are named as such);
    - a header that names a column twice is a ``FileLevelError`` naming it (pandas would rename one ``x.1``);
    - a record with fewer or more fields than the header (Python's ``csv`` module counts them, quoting included)
      becomes an all-null row, never its values shifted into other columns (``load_validated`` quarantines it
      with its reason and its text)."""
    return _read_csv(path, spec)[0]


_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32", "little-endian, byte order mark FF FE 00 00"),
    (codecs.BOM_UTF32_BE, "UTF-32", "big-endian, byte order mark 00 00 FE FF"),
    (codecs.BOM_UTF16_LE, "UTF-16", "little-endian, byte order mark FF FE"),
    (codecs.BOM_UTF16_BE, "UTF-16", "big-endian, byte order mark FE FF"),
)


def _wide_encoding(head: bytes) -> tuple[str, str] | None:
    """UTF-16 or UTF-32 text, by its byte order mark or, without one, by the NUL bytes beside each ASCII
    character (every other byte; three of every four): ``(codec, how it was recognized)``, else ``None``."""
    for bom, codec, how in _BOMS:
        if head.startswith(bom):
            return codec, how
    if len(head) >= 16:
        zeros = [head[i::4].count(0) / len(head[i::4]) for i in range(4)]
        if min(zeros[1:]) > 0.3 and zeros[0] < 0.05:
            return "UTF-32", "little-endian without a byte order mark: three NUL bytes after each ASCII character"
        if min(zeros[:3]) > 0.3 and zeros[3] < 0.05:
            return "UTF-32", "big-endian without a byte order mark: three NUL bytes before each ASCII character"
    even, odd = head[0::2], head[1::2]
    if len(head) >= 8:
        if odd.count(0) > 0.3 * len(odd) and even.count(0) < 0.05 * len(even):
            return "UTF-16", "little-endian without a byte order mark: a NUL byte after each ASCII character"
        if even.count(0) > 0.3 * len(even) and odd.count(0) < 0.05 * len(odd):
            return "UTF-16", "big-endian without a byte order mark: a NUL byte before each ASCII character"
    return None


def _check_records(path: Path) -> tuple[bool, Records]:
    """One pass of Python's ``csv`` module over the file: refuse a header that repeats a name; return whether
    a data record has the wrong field count, and those records (row position -> reason, text). Blank lines are
    no rows (as for pandas)."""
    records: Records = {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next((r for r in reader if r), None)
        if header is None:
            return False, records
        refuse_repeated_names(path, header)
        width, row = len(header), 0
        for fields in reader:
            if not fields:
                continue
            if len(fields) != width:
                out = io.StringIO()
                csv.writer(out, lineterminator="").writerow(fields)
                reason = "_row:too_few_fields" if len(fields) < width else "_row:too_many_fields"
                records[row] = (f"{reason}", out.getvalue())
            row += 1
    return bool(records), records


def _blanked(path: Path, records: Records) -> io.BytesIO:
    """The file's bytes with each record of ``records`` replaced by a record of empty fields (a null row in
    its place, so row positions hold)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = next(r for r in reader if r)
        writer.writerow(header)
        row = 0
        for fields in reader:
            if not fields:
                continue
            writer.writerow([""] * len(header) if row in records else fields)
            row += 1
    return io.BytesIO(out.getvalue().encode("utf-8", errors="surrogateescape"))


def _read_csv(path: Path, spec: PipelineSpec | None = None) -> tuple[pd.DataFrame, Records]:
    """``read_csv``, and the records it made null rows of."""
    with open(path, "rb") as fh:
        wide = _wide_encoding(fh.read(4096))
    if wide is not None:
        codec, how = wide
        raise FileLevelError(
            str(path),
            [
                {
                    "column": "<file>",
                    "problem": "not UTF-8",
                    "received": f"{codec} text ({how})",
                    "expected": f"UTF-8 text (re-export the file as UTF-8, or convert it: iconv -f {codec} -t UTF-8 "
                    f"{Path(path).name} > fixed.csv)",
                }
            ],
        )
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
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long cell is a length rule's job, not the reader's
    try:
        misfit, records = _check_records(path)
        source: Path | io.BytesIO = _blanked(path, records) if misfit else path
    finally:
        csv.field_size_limit(limit)
    columns = {c.name: c for c in (spec.columns if spec is not None else ())}
    # text and timestamps are read as text: a timestamp's text is parsed by validation, as on the request path
    text = [n for n, c in columns.items() if c.kind in TEXT_KINDS or c.kind == "timestamp"]
    # integers too, so that no whole number is read as a float (a null makes pandas read the column as float64)
    integers = [n for n, c in columns.items() if c.kind in NUMBER_KINDS and str(c.raw_dtype) == "int64"]
    if nul:  # the python engine keeps a NUL; its csv module would refuse cells over 128 KiB (a length rule's job)
        csv.field_size_limit(2**31 - 1)

    def read(as_text: list[str], usecols: list[str] | None = None) -> pd.DataFrame:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return pd.read_csv(
            source,
            encoding="utf-8",
            encoding_errors="surrogateescape",
            engine="python" if nul else "c",
            dtype=dict.fromkeys(as_text, str),
            keep_default_na=False,
            # the float the text names, as Python's float() reads it (the C engine's default is off by an ulp at
            # times); the python engine reads floats that way already
            float_precision=None if nul else "round_trip",
            na_values={n: ([""] if n in text else list(NA_TEXT)) for n in columns},
            usecols=usecols,
        )

    try:
        frame = read([*text, *integers])
        # a number beyond float64 ('1e309') reads as inf: such a column's cells are read again as text, and each
        # infinite one whose text names no infinity keeps its text (validation: beyond_float64, the value named)
        beyond = [
            n
            for n, c in columns.items()
            if c.kind in NUMBER_KINDS
            and n not in integers
            and n in frame.columns
            and frame[n].dtype == np.float64
            and np.isinf(frame[n].to_numpy()).any()
        ]
        if beyond:
            cells = read(beyond, usecols=beyond)
            for name in beyond:
                named = cells[name].str.strip().str.lstrip("+-").str.lower().isin(("inf", "infinity"))
                overflow = np.isinf(frame[name].to_numpy()) & ~named.to_numpy(dtype=bool, na_value=False)
                if overflow.any():
                    values = frame[name].astype(object)
                    values[overflow] = cells[name][overflow]
                    frame[name] = values
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
    return frame, records


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
