"""Reading a CSV file as the pipeline spec declares its columns, losing nothing (``read_csv``).

CSV has no types, so the spec says how each column is read: text, ids, categories, timestamps and integers as text
(parsed by validation, as on the request path), numbers as Python's ``float`` reads them. A file that is not
UTF-8 (UTF-16, UTF-32, cp1252) or repeats a column name is a ``FileLevelError``; bytes that are not UTF-8 inside a
UTF-8 file, NUL bytes and records with the wrong number of fields survive to be reported per row
(``read_csv_records`` returns those records; ``features.dataset.load_validated`` quarantines them).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from inferline.features.normalize import integer_cells, number_cells
from inferline.features.spec import PipelineSpec
from inferline.features.validation import FileLevelError, refuse_repeated_names
from inferline.features.vocabulary import NUMBER_KINDS, TEXT_KINDS

__all__ = ["NA_TEXT", "Records", "read_csv", "read_csv_records"]

Records = dict[int, tuple[str, str]]  # row position -> (reason, the record's text as it arrived)

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
      numbers (``normalize.number_cells``) and each other cell is its row's defect (``<column>:not_a_number``...);
      integer columns are read as text and parsed exactly (``normalize.integer_cells``: no whole number beyond
      2**53 becomes a float because a cell is null), floats as Python's ``float`` reads them (``round_trip``);
    - bytes that are not UTF-8 survive as lone surrogates and are reported per row (``<column>:invalid_utf8``);
      a file where no byte sequence is UTF-8 is a ``FileLevelError`` that names its likely encoding (UTF-16 and
      UTF-32, by their byte order mark or their NUL bytes, are named as such);
    - a header that names a column twice is a ``FileLevelError`` naming it (pandas would rename one ``x.1``);
    - a record with fewer or more fields than the header (Python's ``csv`` module counts them, quoting included)
      becomes an all-null row, never its values shifted into other columns (``load_validated`` quarantines it
      with its reason and its text)."""
    return read_csv_records(path, spec)[0]


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


def read_csv_records(path: Path, spec: PipelineSpec | None = None) -> tuple[pd.DataFrame, Records]:
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
